package events

import "strings"

// checkTrace checks the distributed-tracing extension: a traceparent as W3C
// Trace Context writes it (version 00: 00-<32 hex trace id>-<16 hex parent
// id>-<2 hex flags>, lowercase, ids not all zero; a later version may carry
// more after a dash, ff is invalid) and a tracestate of at most
// [MaxTraceStateLen] printable ASCII characters in at most 32 list members,
// only with a traceparent.
func checkTrace(parent, state string) error {
	if parent == "" {
		if state != "" {
			return invalidf(ReasonInvalid, ExtTraceState, "without a traceparent")
		}
		return nil
	}
	if err := checkTraceParent(parent); err != nil {
		return err
	}
	if state == "" {
		return nil
	}
	if len(state) > MaxTraceStateLen {
		return invalidf(ReasonInvalid, ExtTraceState, "longer than %d bytes", MaxTraceStateLen)
	}
	for i := 0; i < len(state); i++ {
		if c := state[i]; c < 0x20 || c > 0x7e {
			return invalidf(ReasonInvalid, ExtTraceState, "not printable ASCII")
		}
	}
	if n := strings.Count(state, ",") + 1; n > 32 {
		return invalidf(ReasonInvalid, ExtTraceState, "%d list members, more than 32", n)
	}
	for member := range strings.SplitSeq(state, ",") {
		if m := strings.Trim(member, " \t"); m != "" && !strings.Contains(m, "=") {
			return invalidf(ReasonInvalid, ExtTraceState, "list member %q is not key=value", clip(m))
		}
	}
	return nil
}

func checkTraceParent(tp string) error {
	bad := func(what string) error {
		return invalidf(ReasonInvalid, ExtTraceParent, "%q is not a W3C traceparent: %s", clip(tp), what)
	}
	const size = 55 // 2+1+32+1+16+1+2
	if len(tp) < size {
		return bad("too short")
	}
	version, traceID, parentID, flags := tp[0:2], tp[3:35], tp[36:52], tp[53:55]
	if tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return bad("fields not separated by dashes")
	}
	for _, f := range []string{version, traceID, parentID, flags} {
		if !lowerHex(f) {
			return bad("not lowercase hex")
		}
	}
	switch {
	case version == "ff":
		return bad("version ff")
	case version == "00" && len(tp) != size:
		return bad("version 00 with more fields")
	case len(tp) > size && tp[size] != '-':
		return bad("fields not separated by dashes")
	case allZero(traceID):
		return bad("zero trace id")
	case allZero(parentID):
		return bad("zero parent id")
	}
	return nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool { return strings.Trim(s, "0") == "" }
