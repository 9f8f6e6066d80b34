package step

import (
	"context"
	"fmt"
	"time"
)

// runEffects runs the side effects of jobs, Concurrency at once across the
// runner, and hands the jobs to flush in groups as their effects end: all
// of them together when they end within StragglerWait of the start, or of
// the previous group; otherwise those that ended, so that one slow side
// effect (a large upload) does not hold the rest of its batch.
//
// A batch of one runs its side effect on the batch's own goroutine: there
// is nothing to run beside it, and each hand-over to another goroutine is
// a wake-up that a lone upload waits for.
func (r *Runner[R]) runEffects(ctx context.Context, jobs []*job[R], flush func([]*job[R])) {
	if len(jobs) == 1 {
		if j := jobs[0]; r.takeEffect(ctx, j) {
			r.guardedEffect(ctx, j)
		}
		flush(jobs)
		return
	}
	ended := make(chan *job[R], len(jobs))
	r.workers.Go(func() {
		for _, j := range jobs {
			if !r.takeEffect(ctx, j) {
				ended <- j
				continue
			}
			r.workers.Go(func() {
				defer func() { ended <- j }()
				r.guardedEffect(ctx, j)
			})
		}
	})
	left := len(jobs)
	defer func() {
		if p := recover(); p != nil {
			for ; left > 0; left-- {
				<-ended // no side effect outlives the batch's handling
			}
			panic(p)
		}
	}()
	t := time.NewTimer(r.opts.StragglerWait)
	defer t.Stop()
	var group []*job[R]
	for left > 0 {
		select {
		case j := <-ended:
			left--
			group = append(group, j)
			if left > 0 {
				continue
			}
		case <-t.C:
			t.Reset(r.opts.StragglerWait)
			if len(group) == 0 {
				continue
			}
		}
		flush(group)
		group = nil
	}
}

// takeEffect takes one of the runner's effect tokens for j (at most
// Concurrency side effects run at once), or fails j if ctx ends first.
func (r *Runner[R]) takeEffect(ctx context.Context, j *job[R]) bool {
	select {
	case r.effects <- struct{}{}:
		return true
	case <-ctx.Done():
		j.fail(ctx.Err())
		return false
	}
}

// guardedEffect runs the side effect of j (runEffect) holding the effect
// token takeEffect took for it, which it gives back; a panic retries j.
func (r *Runner[R]) guardedEffect(ctx context.Context, j *job[R]) {
	defer func() { <-r.effects }()
	defer func() {
		if p := recover(); p != nil {
			j.retry("panic", fmt.Errorf("panic: %v", p))
		}
	}()
	r.runEffect(ctx, j)
}

// runEffect runs the side effect of one claimed job, with its deadline, and
// leaves it effected with its result, or failed.
func (r *Runner[R]) runEffect(ctx context.Context, j *job[R]) {
	if err := r.inject(ctx, pointBeforeEffect); err != nil {
		j.fail(err)
		return
	}
	ectx, cancel := context.WithTimeout(ctx, r.opts.StepTimeout)
	ectx, span := child(r.tracing, ectx, j, partEffect)
	result, err := r.step.Effect(ectx, j.ev)
	end(span, err)
	cancel()
	if err != nil {
		if r.step.ReadOnly && r.recordedBefore(ctx, j) {
			return
		}
		j.fail(err)
		return
	}
	if !r.step.ReadOnly { // a ReadOnly step's counts once recorded
		r.opts.Metrics.effectDone(r.step.Name)
	}
	j.result = result
	j.to(stageEffected)
	// From here on the side effect is done: nothing may cancel its record.
	if err := r.inject(context.WithoutCancel(ctx), pointAfterEffect); err != nil {
		j.fail(err)
	}
}

// recordedBefore looks up the marker of a ReadOnly step's job whose side
// effect failed, which ran without a claim or a look-up: if the step is
// done, the job is skipped, as a look-up before the effect would have
// skipped it. A failed look-up leaves the job to fail with its effect's
// error.
func (r *Runner[R]) recordedBefore(ctx context.Context, j *job[R]) bool {
	lctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	m, found, err := r.markers.Get(lctx, j.ev.ID, r.step.Name)
	if err != nil || !found {
		return false
	}
	j.marker = m
	j.to(stageSkipped)
	r.repeats.Store(true)
	return true
}
