package e2e

// The contract tests keep pkg/events/asyncapi.yaml honest: they parse the
// AsyncAPI document and check it against the constants, types, encoder and
// decoder of the events package. They need no servers or binaries.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"github.com/blobref/blobref/pkg/events"
)

const (
	asyncAPIPath = "../pkg/events/asyncapi.yaml"
	eventsDir    = "../pkg/events"
)

// The constants the document must describe, by name. contractConsts checks
// these lists against the package source, so a constant added to the package
// and not here fails the tests too.
var (
	contractTypes = map[string]string{
		"TypeRequested":  events.TypeRequested,
		"TypeBlobStored": events.TypeBlobStored,
		"TypeCompleted":  events.TypeCompleted,
	}
	contractReasons = map[string]string{
		"ReasonMalformed":        events.ReasonMalformed,
		"ReasonInvalid":          events.ReasonInvalid,
		"ReasonUnknownType":      events.ReasonUnknownType,
		"ReasonTooLarge":         events.ReasonTooLarge,
		"ReasonConflict":         events.ReasonConflict,
		"ReasonDigestMismatch":   events.ReasonDigestMismatch,
		"ReasonRetriesExhausted": events.ReasonRetriesExhausted,
		"ReasonClaimMissing":     events.ReasonClaimMissing,
		"ReasonExpired":          events.ReasonExpired,
	}
	contractDeadHeaders = map[string]string{
		"HeaderDeadReason":     events.HeaderDeadReason,
		"HeaderDeadStep":       events.HeaderDeadStep,
		"HeaderDeadDeliveries": events.HeaderDeadDeliveries,
		"HeaderDeadError":      events.HeaderDeadError,
		"HeaderDeadSubject":    events.HeaderDeadSubject,
		"HeaderDeadStream":     events.HeaderDeadStream,
		"HeaderDeadSequence":   events.HeaderDeadSequence,
		"HeaderDeadTime":       events.HeaderDeadTime,
	}
)

// eventChannels are the three event kinds: the address of their channel
// (built with the package's subject functions) and their type.
var eventChannels = []struct {
	address string
	typ     string
}{
	{events.RequestedSubject("{id}"), events.TypeRequested},
	{events.BlobStoredSubject("{id}"), events.TypeBlobStored},
	{events.CompletedSubject("{id}"), events.TypeCompleted},
}

// dlqAddress is the address of the dead-letter channel: dlq. + any subject of UPLOADS.
var dlqAddress = events.DeadLetterSubject(strings.TrimSuffix(events.StreamSubjects, ">") + "{rest}")

// ---------------------------------------------------------------------------
// The document.

type asyncAPI struct {
	t    *testing.T
	raw  string
	root map[string]any
}

func loadAsyncAPI(t *testing.T) *asyncAPI {
	t.Helper()
	b, err := os.ReadFile(asyncAPIPath)
	if err != nil {
		t.Fatalf("read the AsyncAPI document: %v", err)
	}
	var root map[string]any
	if err := yaml.Unmarshal(b, &root); err != nil { // also refuses duplicate keys
		t.Fatalf("%s: %v", asyncAPIPath, err)
	}
	if root == nil {
		t.Fatalf("%s: empty document", asyncAPIPath)
	}
	return &asyncAPI{t: t, raw: string(b), root: root}
}

// pointer resolves a local reference ("#/a/b") to the node it names.
func (d *asyncAPI) pointer(ref string) (any, error) {
	if ref == "#" {
		return d.root, nil
	}
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("%q is not a reference within the document", ref)
	}
	var cur any = d.root
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, fmt.Errorf("%q: no %q", ref, tok)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, fmt.Errorf("%q: no index %q", ref, tok)
			}
			cur = c[i]
		default:
			return nil, fmt.Errorf("%q: %q is inside a scalar", ref, tok)
		}
	}
	return cur, nil
}

// deref follows $ref until it reaches an object that is not a reference.
func (d *asyncAPI) deref(node any, what string) map[string]any {
	d.t.Helper()
	for range 32 {
		m, ok := node.(map[string]any)
		if !ok {
			d.t.Fatalf("%s: not an object: %#v", what, node)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		next, err := d.pointer(ref)
		if err != nil {
			d.t.Fatalf("%s: %v", what, err)
		}
		node, what = next, ref
	}
	d.t.Fatalf("%s: reference cycle", what)
	return nil
}

// at returns the object at a path of keys under the root.
func (d *asyncAPI) at(path ...string) map[string]any {
	d.t.Helper()
	var cur any = d.root
	for i, k := range path {
		m := d.deref(cur, strings.Join(path[:i], "/"))
		v, ok := m[k]
		if !ok {
			d.t.Fatalf("%s: missing", strings.Join(path[:i+1], "/"))
		}
		cur = v
	}
	return d.deref(cur, strings.Join(path, "/"))
}

// props returns the properties of a schema, its allOf members' included.
func (d *asyncAPI) props(schema any, what string) map[string]any {
	d.t.Helper()
	s := d.deref(schema, what)
	out := map[string]any{}
	if p, ok := s["properties"]; ok {
		maps.Copy(out, d.deref(p, what+"/properties"))
	}
	if all, ok := s["allOf"].([]any); ok {
		for i, sub := range all {
			maps.Copy(out, d.props(sub, fmt.Sprintf("%s/allOf/%d", what, i)))
		}
	}
	return out
}

// keyword returns the value of a keyword of a schema, looking into allOf members too.
func (d *asyncAPI) keyword(schema any, key, what string) (any, bool) {
	d.t.Helper()
	s := d.deref(schema, what)
	if v, ok := s[key]; ok {
		return v, true
	}
	if all, ok := s["allOf"].([]any); ok {
		for i, sub := range all {
			if v, ok := d.keyword(sub, key, fmt.Sprintf("%s/allOf/%d", what, i)); ok {
				return v, true
			}
		}
	}
	return nil, false
}

func (d *asyncAPI) channels() map[string]map[string]any {
	d.t.Helper()
	out := map[string]map[string]any{}
	for name, ch := range d.at("channels") {
		out[name] = d.deref(ch, "channels/"+name)
	}
	return out
}

// channelAt returns the name and object of the one channel with address addr.
func (d *asyncAPI) channelAt(addr string) (string, map[string]any) {
	d.t.Helper()
	var names []string
	for name, ch := range d.channels() {
		if ch["address"] == addr {
			names = append(names, name)
		}
	}
	if len(names) != 1 {
		d.t.Fatalf("channels with address %q: %v, want exactly one", addr, names)
	}
	return names[0], d.channels()[names[0]]
}

// channelMessages returns the messages of a channel, dereferenced, by name.
func (d *asyncAPI) channelMessages(name string) map[string]map[string]any {
	d.t.Helper()
	out := map[string]map[string]any{}
	ch := d.channels()[name]
	for k, m := range d.deref(ch["messages"], "channels/"+name+"/messages") {
		out[k] = d.deref(m, "channels/"+name+"/messages/"+k)
	}
	return out
}

// binaryMessage returns the message of a channel whose headers carry ce-type:
// the binary-mode event.
func (d *asyncAPI) binaryMessage(channel string) (string, map[string]any) {
	d.t.Helper()
	var found []string
	msgs := d.channelMessages(channel)
	for k, m := range msgs {
		if _, ok := m["headers"]; !ok {
			continue
		}
		if _, ok := d.props(m["headers"], k+"/headers")[events.HeaderPrefix+"type"]; ok {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		d.t.Fatalf("channel %s: messages with a ce-type header: %v, want exactly one", channel, found)
	}
	return found[0], msgs[found[0]]
}

func (d *asyncAPI) deadLetterMessage() map[string]any {
	d.t.Helper()
	name, _ := d.channelAt(dlqAddress)
	msgs := d.channelMessages(name)
	if len(msgs) != 1 {
		d.t.Fatalf("channel %s: %d messages, want the dead letter only", name, len(msgs))
	}
	for _, m := range msgs {
		return m
	}
	return nil
}

// operations returns the operations, dereferenced, by name.
func (d *asyncAPI) operations() map[string]map[string]any {
	d.t.Helper()
	out := map[string]map[string]any{}
	for name, op := range d.at("operations") {
		out[name] = d.deref(op, "operations/"+name)
	}
	return out
}

// ---------------------------------------------------------------------------
// Small helpers.

func stringList(t *testing.T, v any, what string) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("%s: not a list: %#v", what, v)
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("%s: %#v is not a string", what, x)
		}
		out = append(out, s)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func sortedValues(m map[string]string) []string {
	return slices.Sorted(maps.Values(m))
}

var paramRE = regexp.MustCompile(`\{([^{}]+)\}`)

// addressParams returns the parameter names of a channel address.
func addressParams(addr string) []string {
	var out []string
	for _, m := range paramRE.FindAllStringSubmatch(addr, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}

// subjectMatches reports whether a NATS subject filter (with * and >) matches subject.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

// packageConsts returns the exported string constants of the events package whose
// names start with prefix, read from its source.
func packageConsts(t *testing.T, prefix string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(eventsDir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("source of the events package: %v (%d files)", err, len(files))
	}
	fset := token.NewFileSet()
	out := map[string]string{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !name.IsExported() || !strings.HasPrefix(name.Name, prefix) {
						continue
					}
					if i >= len(vs.Values) {
						t.Fatalf("%s: const %s has no value of its own", fset.Position(name.Pos()), name.Name)
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: const %s is not a string literal", fset.Position(name.Pos()), name.Name)
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[name.Name] = v
				}
			}
		}
	}
	return out
}

// contractConsts checks that a list of constants above names every constant of
// the package with that prefix, with the same values.
func contractConsts(t *testing.T, prefix string, list map[string]string) {
	t.Helper()
	got := packageConsts(t, prefix)
	if !maps.Equal(got, list) {
		t.Fatalf("constants %s* of the events package: %v; the contract test knows %v: update both the test and asyncapi.yaml", prefix, got, list)
	}
}

// jsonFields returns the JSON member names of a struct type and which of them are
// always present (no omitempty), from its struct tags.
func jsonFields(t *testing.T, typ reflect.Type) (fields []string, required []string, byName map[string]reflect.StructField) {
	t.Helper()
	byName = map[string]reflect.StructField{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		fields = append(fields, name)
		byName[name] = f
		if !slices.Contains(strings.Split(opts, ","), "omitempty") && !slices.Contains(strings.Split(opts, ","), "omitzero") {
			required = append(required, name)
		}
	}
	slices.Sort(fields)
	slices.Sort(required)
	return fields, required, byName
}

// checkValue validates a header value (a string) against the subset of the schema
// keywords the document uses: const, enum, pattern, format, minLength, maxLength, allOf.
func (d *asyncAPI) checkValue(schema any, v, what string) error {
	d.t.Helper()
	s := d.deref(schema, what)
	if all, ok := s["allOf"].([]any); ok {
		for i, sub := range all {
			if err := d.checkValue(sub, v, fmt.Sprintf("%s/allOf/%d", what, i)); err != nil {
				return err
			}
		}
	}
	if typ, ok := s["type"]; ok && typ != "string" {
		return fmt.Errorf("%s: a header schema of type %v", what, typ)
	}
	if c, ok := s["const"]; ok && c != v {
		return fmt.Errorf("%s: %q is not the const %q", what, v, c)
	}
	if e, ok := s["enum"]; ok && !slices.Contains(stringList(d.t, e, what+"/enum"), v) {
		return fmt.Errorf("%s: %q is not in the enum %v", what, v, e)
	}
	if p, ok := s["pattern"].(string); ok {
		re, err := regexp.Compile(p)
		if err != nil {
			return fmt.Errorf("%s: pattern: %v", what, err)
		}
		if !re.MatchString(v) {
			return fmt.Errorf("%s: %q does not match %s", what, v, p)
		}
	}
	if n, ok := s["minLength"].(int); ok && utf8.RuneCountInString(v) < n {
		return fmt.Errorf("%s: %q is shorter than %d", what, v, n)
	}
	if n, ok := s["maxLength"].(int); ok && utf8.RuneCountInString(v) > n {
		return fmt.Errorf("%s: %q is longer than %d", what, v, n)
	}
	switch s["format"] {
	case "date-time":
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return fmt.Errorf("%s: %q is not a date-time: %v", what, v, err)
		}
	case "uri":
		if u, err := url.Parse(v); err != nil || u.Scheme == "" {
			return fmt.Errorf("%s: %q is not a URI", what, v)
		}
	case "uri-reference":
		if _, err := url.Parse(v); err != nil {
			return fmt.Errorf("%s: %q is not a URI-reference", what, v)
		}
	}
	return nil
}

// checkHeaders validates message headers against a headers schema: the required
// headers are present and every header is documented (or allowed by
// additionalProperties) and valid. Names are matched exactly.
func (d *asyncAPI) checkHeaders(schema any, h nats.Header, what string) {
	d.t.Helper()
	s := d.deref(schema, what)
	props := d.props(s, what)
	if req, ok := s["required"]; ok {
		for _, name := range stringList(d.t, req, what+"/required") {
			if _, ok := h[name]; !ok {
				d.t.Errorf("%s: required header %s missing from %v", what, name, sortedKeys(h))
			}
		}
	}
	for name, vs := range h {
		if len(vs) != 1 {
			d.t.Errorf("%s: header %s has %d values", what, name, len(vs))
			continue
		}
		ps, ok := props[name]
		if !ok {
			switch ap := s["additionalProperties"].(type) {
			case map[string]any:
				ps = ap
			case bool:
				if !ap {
					d.t.Errorf("%s: header %s is not documented", what, name)
					continue
				}
			}
			if ps == nil {
				d.t.Errorf("%s: header %s is not documented", what, name)
				continue
			}
		}
		if err := d.checkValue(ps, vs[0], what+"/"+name); err != nil {
			d.t.Error(err)
		}
	}
}

// exampleMsg builds the header and body of a message example.
func exampleMsg(t *testing.T, ex map[string]any, what string) (nats.Header, []byte) {
	t.Helper()
	h := nats.Header{}
	if hs, ok := ex["headers"].(map[string]any); ok {
		for k, v := range hs {
			s, ok := v.(string)
			if !ok {
				t.Fatalf("%s: header %s: %#v is not a string (quote it)", what, k, v)
			}
			h[k] = []string{s}
		}
	}
	var body []byte
	switch p := ex["payload"].(type) {
	case nil:
	case string:
		body = []byte(p)
	default:
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("%s: payload: %v", what, err)
		}
		body = b
	}
	return h, body
}

func examples(t *testing.T, msg map[string]any, what string) []map[string]any {
	t.Helper()
	list, ok := msg["examples"].([]any)
	if !ok || len(list) == 0 {
		t.Fatalf("%s: no examples", what)
	}
	out := make([]map[string]any, 0, len(list))
	for i, ex := range list {
		m, ok := ex.(map[string]any)
		if !ok {
			t.Fatalf("%s/examples/%d: not an object", what, i)
		}
		out = append(out, m)
	}
	return out
}

// ---------------------------------------------------------------------------
// Structure.

// The fixed fields of the AsyncAPI 3.0.0 objects the document uses; the
// specification allows no others, except x- extensions.
var (
	rootFields      = []string{"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"}
	infoFields      = []string{"title", "version", "description", "termsOfService", "contact", "license", "tags", "externalDocs"}
	serverFields    = []string{"host", "protocol", "protocolVersion", "pathname", "description", "title", "summary", "variables", "security", "tags", "externalDocs", "bindings"}
	channelFields   = []string{"address", "messages", "title", "summary", "description", "servers", "parameters", "tags", "externalDocs", "bindings"}
	operationFields = []string{"action", "channel", "title", "summary", "description", "security", "tags", "externalDocs", "bindings", "traits", "messages", "reply"}
	parameterFields = []string{"enum", "default", "description", "examples", "location"}
	messageFields   = []string{"headers", "payload", "correlationId", "contentType", "name", "title", "summary", "description", "tags", "externalDocs", "bindings", "examples", "traits", "deprecated"}
	exampleFields   = []string{"headers", "payload", "name", "summary"}
	componentFields = []string{"schemas", "servers", "channels", "operations", "messages", "securitySchemes", "serverVariables", "parameters", "correlationIds", "replies", "replyAddresses", "externalDocs", "tags", "operationTraits", "messageTraits", "serverBindings", "channelBindings", "operationBindings", "messageBindings"}
)

func checkFields(t *testing.T, obj map[string]any, allowed, required []string, what string) {
	t.Helper()
	for k := range obj {
		if !slices.Contains(allowed, k) && !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: %q is not a field of this AsyncAPI 3.0.0 object", what, k)
		}
	}
	for _, k := range required {
		if _, ok := obj[k]; !ok {
			t.Errorf("%s: required field %q missing", what, k)
		}
	}
}

func TestContractDocumentStructure(t *testing.T) {
	d := loadAsyncAPI(t)

	if v := d.root["asyncapi"]; v != "3.0.0" {
		t.Fatalf("asyncapi = %#v, want \"3.0.0\"", v)
	}
	checkFields(t, d.root, rootFields, []string{"asyncapi", "info", "channels", "operations", "components"}, "document")

	info := d.at("info")
	checkFields(t, info, infoFields, []string{"title", "version", "description"}, "info")
	if info["title"] != "blobref" || info["version"] != "1.0.0" {
		t.Errorf("info: title %#v, version %#v; want blobref, 1.0.0", info["title"], info["version"])
	}

	servers := d.at("servers")
	if len(servers) == 0 {
		t.Error("no servers")
	}
	for name, s := range servers {
		srv := d.deref(s, "servers/"+name)
		checkFields(t, srv, serverFields, []string{"host", "protocol"}, "servers/"+name)
		if srv["protocol"] != "nats" {
			t.Errorf("servers/%s: protocol %#v, want nats", name, srv["protocol"])
		}
	}

	checkFields(t, d.at("components"), componentFields, nil, "components")

	// Every $ref resolves within the document, and a Reference Object has no other fields.
	refs := 0
	var walk func(node any, path string)
	walk = func(node any, path string) {
		switch n := node.(type) {
		case map[string]any:
			if ref, ok := n["$ref"]; ok {
				refs++
				s, ok := ref.(string)
				if !ok {
					t.Errorf("%s: $ref %#v is not a string", path, ref)
				} else if _, err := d.pointer(s); err != nil {
					t.Errorf("%s: %v", path, err)
				}
				if len(n) != 1 {
					t.Errorf("%s: a Reference Object with other fields: %v", path, sortedKeys(n))
				}
			}
			for k, v := range n {
				walk(v, path+"/"+k)
			}
		case []any:
			for i, v := range n {
				walk(v, fmt.Sprintf("%s/%d", path, i))
			}
		}
	}
	walk(d.root, "#")
	if refs == 0 {
		t.Error("no $ref at all")
	}

	// Channels: an address, parameters exactly for its {placeholders}, messages.
	used := map[string]bool{} // channels used by an operation, by action
	for name, ch := range d.channels() {
		what := "channels/" + name
		checkFields(t, ch, channelFields, []string{"address", "messages"}, what)
		addr, ok := ch["address"].(string)
		if !ok || addr == "" {
			t.Errorf("%s: no address", what)
			continue
		}
		var params []string
		if p, ok := ch["parameters"]; ok {
			for k, v := range d.deref(p, what+"/parameters") {
				params = append(params, k)
				checkFields(t, d.deref(v, what+"/parameters/"+k), parameterFields, nil, what+"/parameters/"+k)
			}
		}
		slices.Sort(params)
		if want := addressParams(addr); !slices.Equal(params, want) {
			t.Errorf("%s: parameters %v, the address %q has %v", what, params, addr, want)
		}
		msgs := d.channelMessages(name)
		if len(msgs) == 0 {
			t.Errorf("%s: no messages", what)
		}
		for k, m := range msgs {
			mw := what + "/messages/" + k
			checkFields(t, m, messageFields, []string{"payload"}, mw)
			if ex, ok := m["examples"].([]any); ok {
				for i, e := range ex {
					em, ok := e.(map[string]any)
					if !ok {
						t.Errorf("%s/examples/%d: not an object", mw, i)
						continue
					}
					checkFields(t, em, exampleFields, nil, fmt.Sprintf("%s/examples/%d", mw, i))
				}
			}
		}
	}

	// Operations: send or receive on a channel of the document, with a subset of its messages.
	for name, op := range d.operations() {
		what := "operations/" + name
		checkFields(t, op, operationFields, []string{"action", "channel"}, what)
		action := op["action"]
		if action != "send" && action != "receive" {
			t.Errorf("%s: action %#v, want send or receive", what, action)
		}
		chRef, _ := op["channel"].(map[string]any)["$ref"].(string)
		chName, ok := strings.CutPrefix(chRef, "#/channels/")
		if !ok || strings.Contains(chName, "/") {
			t.Errorf("%s: channel %q is not a reference to a channel of the document", what, chRef)
			continue
		}
		if _, ok := d.channels()[chName]; !ok {
			t.Errorf("%s: channel %q does not exist", what, chRef)
			continue
		}
		used[chName+" "+fmt.Sprint(action)] = true
		if m, ok := op["messages"]; ok {
			list, ok := m.([]any)
			if !ok || len(list) == 0 {
				t.Errorf("%s: messages is not a list of references", what)
			}
			for i, r := range list {
				ref, _ := r.(map[string]any)["$ref"].(string)
				if !strings.HasPrefix(ref, chRef+"/messages/") {
					t.Errorf("%s/messages/%d: %q is not a message of %s", what, i, ref, chRef)
				}
			}
		}
	}
	for name := range d.channels() {
		for _, action := range []string{"send", "receive"} {
			if !used[name+" "+action] {
				t.Errorf("channels/%s: no %s operation", name, action)
			}
		}
	}

	// Every component message is used by a channel.
	usedMsgs := map[string]bool{}
	for name := range d.channels() {
		for k, m := range d.deref(d.channels()[name]["messages"], name) {
			if ref, ok := m.(map[string]any)["$ref"].(string); ok {
				usedMsgs[ref] = true
			} else {
				usedMsgs[name+"/"+k] = true
			}
		}
	}
	for k := range d.at("components", "messages") {
		if !usedMsgs["#/components/messages/"+k] {
			t.Errorf("components/messages/%s: used by no channel", k)
		}
	}
}

// ---------------------------------------------------------------------------
// Channels, types and JetStream.

func TestContractChannelsAndTypes(t *testing.T) {
	d := loadAsyncAPI(t)
	contractConsts(t, "Type", contractTypes)

	for _, ec := range eventChannels {
		name, ch := d.channelAt(ec.address)
		if got := strings.ReplaceAll(ec.address, "{id}", "abc123"); got != mustSubjectFor(t, ec.typ, "abc123") {
			t.Errorf("channel %s: %s is not SubjectFor(%s)", name, got, ec.typ)
		}
		if !subjectMatches(events.StreamSubjects, strings.ReplaceAll(ec.address, "{id}", "abc123")) {
			t.Errorf("channel %s: %q is outside the stream subjects %q", name, ec.address, events.StreamSubjects)
		}
		if js, _ := ch["x-jetstream"].(map[string]any); js["stream"] != events.StreamName {
			t.Errorf("channel %s: x-jetstream.stream %#v, want %s", name, js["stream"], events.StreamName)
		}
		mname, msg := d.binaryMessage(name)
		c, ok := d.keyword(d.props(msg["headers"], mname+"/headers")[events.HeaderPrefix+"type"], "const", mname+"/headers/ce-type")
		if !ok || c != ec.typ {
			t.Errorf("channel %s, message %s: ce-type const %#v, want %s", name, mname, c, ec.typ)
		}
	}

	// No message documents a type the package does not know, nor one twice.
	var consts []string
	for k, m := range d.at("components", "messages") {
		msg := d.deref(m, "components/messages/"+k)
		if _, ok := msg["headers"]; !ok {
			continue
		}
		if ps, ok := d.props(msg["headers"], k)[events.HeaderPrefix+"type"]; ok {
			c, _ := d.keyword(ps, "const", k+"/headers/ce-type")
			s, _ := c.(string)
			consts = append(consts, s)
		}
	}
	slices.Sort(consts)
	if want := sortedValues(contractTypes); !slices.Equal(consts, want) {
		t.Errorf("ce-type consts of the messages: %v, want %v", consts, want)
	}

	// The structured-mode event lists the same types.
	structured := d.deref(d.at("components", "messages", "structuredEvent")["payload"], "structuredEvent/payload")
	enum := stringList(t, d.deref(d.props(structured, "StructuredEvent")["type"], "StructuredEvent/type")["enum"], "StructuredEvent/type/enum")
	slices.Sort(enum)
	if want := sortedValues(contractTypes); !slices.Equal(enum, want) {
		t.Errorf("structured event type enum: %v, want %v", enum, want)
	}

	// The dead-letter channel: dlq. + any subject of UPLOADS, in UPLOADS_DLQ.
	name, ch := d.channelAt(dlqAddress)
	if got := strings.ReplaceAll(dlqAddress, "{rest}", ">"); got != events.DLQSubjects {
		t.Errorf("channel %s: %q with {rest} = > is %q, want the DLQ stream subjects %q", name, dlqAddress, got, events.DLQSubjects)
	}
	if js, _ := ch["x-jetstream"].(map[string]any); js["stream"] != events.DLQStreamName {
		t.Errorf("channel %s: x-jetstream.stream %#v, want %s", name, js["stream"], events.DLQStreamName)
	}
	rest := d.deref(d.deref(ch["parameters"], name)["rest"], name+"/parameters/rest")
	for _, ex := range stringList(t, rest["examples"], name+"/parameters/rest/examples") {
		orig := strings.TrimSuffix(events.StreamSubjects, ">") + ex
		if !subjectMatches(events.StreamSubjects, orig) {
			t.Errorf("rest example %q: %q is not a subject of %s", ex, orig, events.StreamName)
		}
		if got, want := strings.ReplaceAll(dlqAddress, "{rest}", ex), events.DeadLetterSubject(orig); got != want {
			t.Errorf("rest example %q: address %q, DeadLetterSubject %q", ex, got, want)
		}
	}

	// Every channel is one of these four.
	if n := len(d.channels()); n != len(eventChannels)+1 {
		t.Errorf("%d channels, want %d", n, len(eventChannels)+1)
	}
}

func mustSubjectFor(t *testing.T, typ, id string) string {
	t.Helper()
	s, err := events.SubjectFor(typ, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestContractJetStream(t *testing.T) {
	d := loadAsyncAPI(t)

	// The streams, subjects and consumers are named in the description of the document.
	desc, _ := d.at("info")["description"].(string)
	for _, s := range []string{
		events.StreamName, events.StreamSubjects, events.DLQStreamName, events.DLQSubjects,
		events.BlobWriterConsumer.Durable, events.BlobWriterConsumer.FilterSubject,
		events.RefWriterConsumer.Durable, events.RefWriterConsumer.FilterSubject,
		events.NotifierConsumer.Durable, events.NotifierConsumer.FilterSubject,
		events.IngestStoredConsumer.Durable, events.IngestCompletedConsumer.Durable, events.IngestDeadLetterConsumer.Durable,
		events.HeaderMsgID,
	} {
		if !strings.Contains(desc, "`"+s+"`") {
			t.Errorf("info.description does not name `%s`", s)
		}
	}

	// The receive operations of the steps name their durable consumers, on the right channels.
	consumers := map[string]events.ConsumerSpec{}
	for name, op := range d.operations() {
		js, ok := op["x-jetstream"].(map[string]any)
		if !ok {
			continue
		}
		chRef := op["channel"].(map[string]any)["$ref"].(string)
		ch := d.deref(op["channel"], chRef)
		addr, _ := ch["address"].(string)
		stream := events.StreamName
		if addr == dlqAddress {
			stream = events.DLQStreamName
		}
		if js["stream"] != stream {
			t.Errorf("operations/%s: x-jetstream.stream %#v, want %s", name, js["stream"], stream)
		}
		durable, ok := js["durable"].(string)
		if !ok {
			continue
		}
		if op["action"] != "receive" {
			t.Errorf("operations/%s: a durable consumer on a %v operation", name, op["action"])
		}
		filter, _ := js["filterSubject"].(string)
		if want := strings.NewReplacer("{id}", ">", "{rest}", ">").Replace(addr); filter != want {
			t.Errorf("operations/%s: filterSubject %q, the channel %q wants %q", name, filter, addr, want)
		}
		if _, dup := consumers[durable]; dup {
			t.Errorf("durable consumer %s documented twice", durable)
		}
		consumers[durable] = events.ConsumerSpec{Durable: durable, FilterSubject: filter, Stream: stream}
	}
	// The AsyncAPI document names each consumer's durable, filter and
	// stream: the steps' and ingest's read model's; the step and event type
	// it runs are the code's, checked elsewhere.
	want := map[string]events.ConsumerSpec{}
	for _, spec := range append([]events.ConsumerSpec{events.BlobWriterConsumer, events.RefWriterConsumer, events.NotifierConsumer}, events.IngestViewConsumers...) {
		want[spec.Durable] = events.ConsumerSpec{Durable: spec.Durable, FilterSubject: spec.FilterSubject, Stream: spec.StreamOrDefault()}
	}
	if !maps.Equal(consumers, want) {
		t.Errorf("documented consumers %v, want %v", consumers, want)
	}
	for _, spec := range want {
		subjects := events.StreamSubjects
		if spec.Stream == events.DLQStreamName {
			subjects = events.DLQSubjects
		}
		if !subjectMatches(subjects, strings.ReplaceAll(spec.FilterSubject, ">", "x")) {
			t.Errorf("consumer %s: filter %q outside %s", spec.Durable, spec.FilterSubject, subjects)
		}
	}
}

// ---------------------------------------------------------------------------
// Patterns.

func TestContractIDAndDigestPatterns(t *testing.T) {
	d := loadAsyncAPI(t)

	ids := []string{
		"", "a", "abc123", "A-Z_a-z-0-9", strings.Repeat("x", 128), strings.Repeat("x", 129),
		"a.b", "a b", "a*", "a>", "a/b", "é", "abc\n", "-", "_",
	}
	check := func(what, pattern string) {
		t.Helper()
		re, err := regexp.Compile(pattern)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		for _, id := range ids {
			if got, want := re.MatchString(id), events.ValidID(id); got != want {
				t.Errorf("%s %s: matches %q = %v, ValidID = %v", what, pattern, id, got, want)
			}
		}
	}

	// The {id} parameter of every event channel.
	for _, ec := range eventChannels {
		name, ch := d.channelAt(ec.address)
		p := d.deref(d.deref(ch["parameters"], name)["id"], name+"/parameters/id")
		pattern, ok := p["x-pattern"].(string)
		if !ok {
			t.Errorf("channel %s: parameter id has no x-pattern", name)
			continue
		}
		check("channel "+name+" parameter id", pattern)
		if desc, _ := p["description"].(string); !strings.Contains(desc, pattern) {
			t.Errorf("channel %s: the description of parameter id does not give its pattern %s", name, pattern)
		}

		// ce-id of its binary message.
		mname, msg := d.binaryMessage(name)
		ps := d.props(msg["headers"], mname+"/headers")
		pat, _ := d.keyword(ps[events.HeaderPrefix+"id"], "pattern", mname+"/headers/ce-id")
		s, _ := pat.(string)
		check(mname+" ce-id", s)

		// ce-sha256: what the package accepts as the sha256 extension.
		pat, _ = d.keyword(ps[events.HeaderPrefix+events.ExtSHA256], "pattern", mname+"/headers/ce-sha256")
		s, _ = pat.(string)
		if s != `^[0-9a-f]{64}$` {
			t.Errorf("%s: ce-sha256 pattern %q", mname, s)
		}
		re, err := regexp.Compile(s)
		if err != nil {
			t.Error(err)
			continue
		}
		hello := "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
		for _, sha := range []string{hello, strings.ToUpper(hello), hello[:63], hello + "0", "g" + hello[1:], ""} {
			_, err := events.NewRequested(events.Request{
				ID: "abc123", Source: "/contract", Subject: "s", ContentType: "text/plain",
				DataRef: "nats-object://claims/abc123", SHA256: sha,
			})
			if got, want := re.MatchString(sha), err == nil; got != want {
				t.Errorf("%s: ce-sha256 pattern matches %q = %v, the package accepts it = %v (%v)", mname, sha, got, want, err)
			}
		}
	}

	// The id of a Reference.
	refID := d.props(d.at("components", "schemas", "Reference"), "Reference")["id"]
	pat, _ := d.keyword(refID, "pattern", "Reference/id")
	s, _ := pat.(string)
	check("Reference.id", s)
}

// ---------------------------------------------------------------------------
// Headers: documented as the encoder writes them.

// sampleEvents builds one event of each kind with the package, as the pipeline does.
func sampleEvents(t *testing.T) (inline, claim, stored, completed *nats.Msg) {
	t.Helper()
	msg := func(e *events.Event, err error, id string) *nats.Msg {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		m, err := e.Msg(id)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC)
	req, err := events.NewRequested(events.Request{
		ID: "abc123", Source: "/blobref/ingest", Owner: "alice", Subject: "users/42/avatar",
		ContentType: "text/plain", Time: at, Data: []byte("hello"),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "rojo=00f067aa0ba902b7",
	})
	inline = msg(req, err, req.ID)
	cl, err := events.NewRequested(events.Request{
		ID: "big-001", Source: "/blobref/ingest", Subject: "users/42/video", ContentType: "video/mp4",
		Time: at, DataRef: "nats-object://uploads-staging/big-001", SHA256: req.SHA256,
	})
	claim = msg(cl, err, cl.ID)
	blob := events.Blob{Key: "uploads/abc123", Size: 5, SHA256: req.SHA256, ContentType: "text/plain"}
	st, err := events.NewBlobStored(req, blob, "/blobref/blobwriter")
	stored = msg(st, err, events.DerivedMsgID("blob", events.StreamName, 1))
	co, err := events.NewCompleted(st, events.Reference{ID: req.ID, Subject: req.Subject, Blob: blob, EventTime: at}, "/blobref/refwriter")
	completed = msg(co, err, events.DerivedMsgID("ref", events.StreamName, 2))
	return inline, claim, stored, completed
}

func TestContractEventHeaders(t *testing.T) {
	d := loadAsyncAPI(t)
	inline, claim, stored, completed := sampleEvents(t)

	base := []string{events.HeaderMsgID}
	for _, attr := range []string{"specversion", "id", "source", events.ExtOwner, "type", "subject", "time", "datacontenttype", events.ExtSHA256,
		events.ExtTraceParent, events.ExtTraceState} {
		base = append(base, events.HeaderPrefix+attr)
	}
	for _, c := range []struct {
		msgs    []*nats.Msg
		headers []string
	}{
		{[]*nats.Msg{inline, claim}, append(slices.Clone(base), events.HeaderPrefix+events.ExtDataRef)},
		{[]*nats.Msg{stored}, base},
		{[]*nats.Msg{completed}, base},
	} {
		// The channel of the encoded subject, and its binary message.
		var name string
		for _, ec := range eventChannels {
			if subjectMatches(strings.ReplaceAll(ec.address, "{id}", "*"), c.msgs[0].Subject) {
				name, _ = d.channelAt(ec.address)
			}
		}
		if name == "" {
			t.Errorf("no channel for subject %s", c.msgs[0].Subject)
			continue
		}
		mname, msg := d.binaryMessage(name)
		what := mname + "/headers"
		documented := sortedKeys(d.props(msg["headers"], what))
		want := slices.Sorted(slices.Values(c.headers))
		if !slices.Equal(documented, want) {
			t.Errorf("%s: documented headers %v, want %v", what, documented, want)
		}
		// Every header the encoder writes is documented and valid; the required ones are there.
		written := map[string]bool{}
		for _, m := range c.msgs {
			d.checkHeaders(msg["headers"], m.Header, fmt.Sprintf("%s (encoded %s)", what, m.Subject))
			for k := range m.Header {
				written[k] = true
			}
		}
		if got := sortedKeys(written); !slices.Equal(got, want) {
			t.Errorf("%s: the encoder writes %v, the document lists %v", what, got, want)
		}
	}
}

// ---------------------------------------------------------------------------
// Dead letters.

func TestContractDeadLetters(t *testing.T) {
	d := loadAsyncAPI(t)
	contractConsts(t, "Reason", contractReasons)
	contractConsts(t, "HeaderDead", contractDeadHeaders)

	msg := d.deadLetterMessage()
	headers := d.props(msg["headers"], "deadLetter/headers")

	// The reason enum is exactly the Reason constants.
	reason, ok := headers[events.HeaderDeadReason]
	if !ok {
		t.Fatalf("dead letter: no %s header", events.HeaderDeadReason)
	}
	enumV, ok := d.keyword(reason, "enum", "deadLetter/headers/"+events.HeaderDeadReason)
	if !ok {
		t.Fatalf("dead letter: %s has no enum", events.HeaderDeadReason)
	}
	enum := stringList(t, enumV, "reason enum")
	slices.Sort(enum)
	if want := sortedValues(contractReasons); !slices.Equal(enum, want) {
		t.Errorf("reason enum %v, want the Reason constants %v", enum, want)
	}

	// Every HeaderDead* constant is a documented header, and every documented
	// Blobref-Dead-* header is one of them.
	for _, name := range sortedKeys(contractDeadHeaders) {
		if _, ok := headers[contractDeadHeaders[name]]; !ok {
			t.Errorf("dead letter: header %s (%s) is not documented", contractDeadHeaders[name], name)
		}
	}
	prefix := strings.TrimSuffix(events.HeaderDeadReason, "Reason")
	for h := range headers {
		if strings.HasPrefix(h, prefix) && !slices.Contains(sortedValues(contractDeadHeaders), h) {
			t.Errorf("dead letter: documented header %s is no HeaderDead* constant", h)
		}
	}
	if _, ok := headers[events.HeaderMsgID]; !ok {
		t.Errorf("dead letter: %s is not documented", events.HeaderMsgID)
	}

	// What DeadLetterMsg writes is documented and valid, for every reason.
	inline, _, stored, _ := sampleEvents(t)
	inline.Header.Set("Nats-Expected-Stream", events.StreamName) // dropped: a publish directive
	name, _ := d.channelAt(dlqAddress)
	for i, r := range sortedValues(contractReasons) {
		orig := inline
		step := "blob"
		if i%2 == 1 {
			orig, step = stored, "ref"
		}
		dl := events.DeadLetter{
			Reason: r, Step: step, Error: "something\nwent wrong", Subject: orig.Subject,
			Stream: events.StreamName, Deliveries: 3, Sequence: uint64(10 + i),
		}
		m := events.DeadLetterMsg(dl, orig.Header, orig.Data, events.DerivedMsgID("dlq-"+step, events.StreamName, dl.Sequence))
		if !subjectMatches(strings.ReplaceAll(dlqAddress, "{rest}", ">"), m.Subject) {
			t.Errorf("DeadLetterMsg subject %q is not on channel %s (%s)", m.Subject, name, dlqAddress)
		}
		d.checkHeaders(msg["headers"], m.Header, "deadLetter/headers (DeadLetterMsg "+r+")")
		for k := range m.Header {
			if strings.HasPrefix(k, "Nats-") && k != events.HeaderMsgID {
				t.Errorf("DeadLetterMsg kept %s, which the document says is dropped", k)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Payloads.

func TestContractPayloads(t *testing.T) {
	d := loadAsyncAPI(t)

	checkObject := func(schema any, typ reflect.Type, what string) {
		t.Helper()
		s := d.deref(schema, what)
		if s["type"] != "object" {
			t.Errorf("%s: type %#v, want object", what, s["type"])
		}
		fields, required, byName := jsonFields(t, typ)
		props := d.props(s, what)
		if got := sortedKeys(props); !slices.Equal(got, fields) {
			t.Errorf("%s: properties %v, but %s has the JSON fields %v", what, got, typ, fields)
		}
		var req []string
		if r, ok := s["required"]; ok {
			req = stringList(t, r, what+"/required")
		}
		slices.Sort(req)
		if !slices.Equal(req, required) {
			t.Errorf("%s: required %v, but %s always encodes %v", what, req, typ, required)
		}
		for name, f := range byName {
			p, ok := props[name]
			if !ok {
				continue
			}
			ps := d.deref(p, what+"/"+name)
			var wantType, wantFormat string
			switch {
			case f.Type == reflect.TypeFor[time.Time]():
				wantType, wantFormat = "string", "date-time"
			case f.Type.Kind() == reflect.String:
				wantType = "string"
			case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Uint64:
				wantType = "integer"
			case f.Type.Kind() == reflect.Struct:
				wantType = "object"
			default:
				t.Errorf("%s.%s: no JSON Schema type known for %s", typ, f.Name, f.Type)
				continue
			}
			if ps["type"] != wantType {
				t.Errorf("%s/%s: type %#v, want %s (%s)", what, name, ps["type"], wantType, f.Type)
			}
			if wantFormat != "" && ps["format"] != wantFormat {
				t.Errorf("%s/%s: format %#v, want %s", what, name, ps["format"], wantFormat)
			}
		}
	}

	blobType, refType := reflect.TypeFor[events.Blob](), reflect.TypeFor[events.Reference]()

	_, msg := d.binaryMessage(mustChannel(d, events.BlobStoredSubject("{id}")))
	checkObject(msg["payload"], blobType, "blob_stored payload")
	if msg["contentType"] != "application/json" {
		t.Errorf("blob_stored: contentType %#v", msg["contentType"])
	}

	_, msg = d.binaryMessage(mustChannel(d, events.CompletedSubject("{id}")))
	checkObject(msg["payload"], refType, "completed payload")
	if msg["contentType"] != "application/json" {
		t.Errorf("completed: contentType %#v", msg["contentType"])
	}
	refBlob := d.props(msg["payload"], "completed payload")["blob"]
	checkObject(refBlob, blobType, "completed payload/blob")

	_, msg = d.binaryMessage(mustChannel(d, events.RequestedSubject("{id}")))
	p := d.deref(msg["payload"], "requested payload")
	if p["type"] != "string" || p["format"] != "binary" {
		t.Errorf("requested payload: type %#v, format %#v; want string, binary", p["type"], p["format"])
	}

	// The encoder's JSON payloads have the documented members.
	_, _, stored, completed := sampleEvents(t)
	for _, c := range []struct {
		body []byte
		typ  reflect.Type
	}{{stored.Data, blobType}, {completed.Data, refType}} {
		var m map[string]any
		if err := json.Unmarshal(c.body, &m); err != nil {
			t.Fatal(err)
		}
		fields, _, _ := jsonFields(t, c.typ)
		if got := sortedKeys(m); !slices.Equal(got, fields) {
			t.Errorf("encoded %s has members %v, want %v", c.typ, got, fields)
		}
	}
}

func mustChannel(d *asyncAPI, addr string) string {
	name, _ := d.channelAt(addr)
	return name
}

// ---------------------------------------------------------------------------
// Examples: every example is a message the package accepts.

func TestContractExamples(t *testing.T) {
	d := loadAsyncAPI(t)

	for _, ec := range eventChannels {
		name, _ := d.channelAt(ec.address)
		mname, msg := d.binaryMessage(name)
		for i, ex := range examples(t, msg, mname) {
			what := fmt.Sprintf("%s/examples/%d", mname, i)
			h, body := exampleMsg(t, ex, what)
			d.checkHeaders(msg["headers"], h, what+"/headers")
			subject := strings.ReplaceAll(ec.address, "{id}", h.Get(events.HeaderPrefix+"id"))
			ev, err := events.Decode(subject, h, body)
			if err != nil {
				t.Errorf("%s: Decode on %s: %v", what, subject, err)
				continue
			}
			if ev.Type != ec.typ {
				t.Errorf("%s: type %s, want %s", what, ev.Type, ec.typ)
			}
		}
	}

	msg := d.at("components", "messages", "structuredEvent")
	for i, ex := range examples(t, msg, "structuredEvent") {
		what := fmt.Sprintf("structuredEvent/examples/%d", i)
		h, body := exampleMsg(t, ex, what)
		d.checkHeaders(msg["headers"], h, what+"/headers")
		p, _ := ex["payload"].(map[string]any)
		typ, _ := p["type"].(string)
		id, _ := p["id"].(string)
		subject := mustSubjectFor(t, typ, id)
		ev, err := events.Decode(subject, h, body)
		if err != nil {
			t.Errorf("%s: Decode on %s: %v", what, subject, err)
			continue
		}
		if ev.Type != typ {
			t.Errorf("%s: decoded type %s, want %s", what, ev.Type, typ)
		}
	}

	dl := d.deadLetterMessage()
	for i, ex := range examples(t, dl, "deadLetter") {
		what := fmt.Sprintf("deadLetter/examples/%d", i)
		h, body := exampleMsg(t, ex, what)
		d.checkHeaders(dl["headers"], h, what+"/headers")
		parsed, err := events.ParseDeadLetter(h)
		if err != nil {
			t.Errorf("%s: ParseDeadLetter: %v", what, err)
			continue
		}
		if !slices.Contains(sortedValues(contractReasons), parsed.Reason) {
			t.Errorf("%s: reason %q", what, parsed.Reason)
		}
		if parsed.Stream != events.StreamName {
			t.Errorf("%s: original stream %q, want %s", what, parsed.Stream, events.StreamName)
		}
		if !subjectMatches(strings.ReplaceAll(dlqAddress, "{rest}", ">"), events.DeadLetterSubject(parsed.Subject)) {
			t.Errorf("%s: dead letter of %q is not on %s", what, parsed.Subject, dlqAddress)
		}
		// The original event travels in the dead letter: its ce- headers and body still decode.
		if _, err := events.Decode(parsed.Subject, h, body); err != nil {
			t.Errorf("%s: the original event does not decode: %v", what, err)
		}
	}
}
