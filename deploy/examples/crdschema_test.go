package examples

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// validateSchema checks v against the subset of OpenAPI v3 that structural
// CRD schemas use: type, properties, required, enum, additionalProperties,
// items, anyOf, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-
// fields, pattern, minimum/maximum, minLength/maxLength, minItems/maxItems.
// A field the schema does not declare is an error, as the API server's
// strict field validation (kubectl's default) makes it. CEL rules
// (x-kubernetes-validations) are not evaluated. It returns one message per
// problem, each naming the path.
func validateSchema(path string, v any, s map[string]any) []string {
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, a...)) }
	if s["x-kubernetes-int-or-string"] == true {
		switch x := v.(type) {
		case string:
		case float64:
			if x != math.Trunc(x) {
				fail("must be an integer or a string, not %v", x)
			}
		default:
			fail("must be an integer or a string, not %T", v)
		}
		return append(errs, checkString(path, v, s)...)
	}
	if alts, ok := s["anyOf"].([]any); ok {
		matched := false
		for _, a := range alts {
			if m, ok := a.(map[string]any); ok && len(validateSchema(path, v, m)) == 0 {
				matched = true
				break
			}
		}
		if !matched {
			fail("matches none of the allowed schemas")
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if reflect.DeepEqual(e, v) {
				found = true
				break
			}
		}
		if !found {
			fail("%v is not one of %v", v, enum)
		}
	}
	switch t, _ := s["type"].(string); t {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			fail("must be an object, not %T", v)
			return errs
		}
		errs = append(errs, validateObject(path, obj, s)...)
	case "array":
		arr, ok := v.([]any)
		if !ok {
			fail("must be an array, not %T", v)
			return errs
		}
		if n, ok := s["minItems"].(float64); ok && float64(len(arr)) < n {
			fail("has %d items, fewer than %v", len(arr), n)
		}
		if n, ok := s["maxItems"].(float64); ok && float64(len(arr)) > n {
			fail("has %d items, more than %v", len(arr), n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range arr {
				errs = append(errs, validateSchema(fmt.Sprintf("%s[%d]", path, i), e, items)...)
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			fail("must be a string, not %T (%v)", v, v)
			return errs
		}
		errs = append(errs, checkString(path, v, s)...)
	case "integer", "number":
		x, ok := v.(float64)
		if !ok || (t == "integer" && x != math.Trunc(x)) {
			fail("must be an %s, not %T (%v)", t, v, v)
			return errs
		}
		if m, ok := s["minimum"].(float64); ok && x < m {
			fail("%v is below the minimum %v", x, m)
		}
		if m, ok := s["maximum"].(float64); ok && x > m {
			fail("%v is above the maximum %v", x, m)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("must be a boolean, not %T (%v)", v, v)
		}
	case "":
	default:
		fail("schema has unknown type %q", t)
	}
	return errs
}

func validateObject(path string, obj map[string]any, s map[string]any) []string {
	var errs []string
	props, _ := s["properties"].(map[string]any)
	if req, ok := s["required"].([]any); ok {
		for _, r := range req {
			if _, ok := obj[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required field %q is missing", path, r))
			}
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub := path + "." + k
		if p, ok := props[k].(map[string]any); ok {
			errs = append(errs, validateSchema(sub, obj[k], p)...)
			continue
		}
		switch ap := s["additionalProperties"].(type) {
		case map[string]any:
			errs = append(errs, validateSchema(sub, obj[k], ap)...)
			continue
		case bool:
			if ap {
				continue
			}
		}
		if s["x-kubernetes-preserve-unknown-fields"] == true {
			continue
		}
		errs = append(errs, fmt.Sprintf("%s: unknown field (the schema declares %s)", sub, strings.Join(sortedKeys(props), ", ")))
	}
	return errs
}

func checkString(path string, v any, s map[string]any) []string {
	str, ok := v.(string)
	if !ok {
		return nil
	}
	var errs []string
	if p, ok := s["pattern"].(string); ok {
		// ECMA-262 patterns; the ones CRDs use (quantities, names) are RE2 too.
		if re, err := regexp.Compile(p); err == nil && !re.MatchString(str) {
			errs = append(errs, fmt.Sprintf("%s: %q does not match %s", path, str, p))
		}
	}
	if n, ok := s["minLength"].(float64); ok && float64(len(str)) < n {
		errs = append(errs, fmt.Sprintf("%s: %q is shorter than %v", path, str, n))
	}
	if n, ok := s["maxLength"].(float64); ok && float64(len(str)) > n {
		errs = append(errs, fmt.Sprintf("%s: %q is longer than %v", path, str, n))
	}
	return errs
}

func sortedKeys(m map[string]any) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
