package steprun

// OutageOf names the dependency whose outage err is, as the runner
// classifies it, or "" when err is the step's own failure. An uncertain
// outage (a timeout) counts: the runner probes before it believes it.
func OutageOf(err error) string {
	o, ok := classify(err)
	if !ok {
		return ""
	}
	return o.dependency
}
