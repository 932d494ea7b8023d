// render: renders a Helm chart the way `helm template` does, for the tests (no helm binary can be
// installed here). Go's text/template with the Sprig functions, plus the Helm built-ins the
// Kairos chart uses: include, required, toYaml, .Values (values.yaml deep-merged with each -f
// file), .Release, .Chart, .Files.Get, and crds/ with --include-crds.
//
// Usage: render [--include-crds] [--namespace NS] [--name RELEASE] [-f values.yaml]... CHART_DIR
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func readYaml(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return out, nil
}

// merge overlays src on dst (maps merge recursively, anything else replaces).
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// chartFiles is .Files: files of the chart directory by relative path.
type chartFiles struct{ root string }

func (f chartFiles) Get(name string) string {
	data, err := os.ReadFile(filepath.Join(f.root, name))
	if err != nil {
		return ""
	}
	return string(data)
}

func main() {
	var valueFiles files
	includeCrds := flag.Bool("include-crds", false, "also print crds/")
	namespace := flag.String("namespace", "default", "release namespace")
	name := flag.String("name", "kairos-operator", "release name")
	flag.Var(&valueFiles, "f", "values file (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: render [--include-crds] [-f values.yaml]... CHART_DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), valueFiles, *includeCrds, *namespace, *name); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(chart string, valueFiles []string, includeCrds bool, namespace, name string) error {
	meta, err := readYaml(filepath.Join(chart, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYaml(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		v, err := readYaml(f)
		if err != nil {
			return err
		}
		values = merge(values, v)
	}
	chartMeta := map[string]interface{}{}
	for k, v := range meta {
		// Helm exposes Chart.yaml keys capitalised: .Chart.Name, .Chart.AppVersion, ...
		chartMeta[strings.ToUpper(k[:1])+k[1:]] = v
	}
	top := map[string]interface{}{
		"Values":  values,
		"Chart":   chartMeta,
		"Files":   chartFiles{root: chart},
		"Release": map[string]interface{}{"Name": name, "Namespace": namespace, "Service": "Helm", "IsInstall": true},
	}

	tpl := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(n string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := tpl.ExecuteTemplate(&buf, n, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["toYaml"] = func(v interface{}) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	tpl.Funcs(funcs).Option("missingkey=zero")

	paths, err := filepath.Glob(filepath.Join(chart, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := tpl.New(filepath.Base(p)).Parse(string(data)); err != nil {
			return err
		}
	}
	if includeCrds {
		crds, _ := filepath.Glob(filepath.Join(chart, "crds", "*.yaml"))
		sort.Strings(crds)
		for _, c := range crds {
			data, err := os.ReadFile(c)
			if err != nil {
				return err
			}
			fmt.Printf("---\n# Source: crds/%s\n%s\n", filepath.Base(c), strings.TrimSpace(string(data)))
		}
	}
	for _, p := range paths {
		base := filepath.Base(p)
		if strings.HasPrefix(base, "_") || !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			continue
		}
		var buf bytes.Buffer
		if err := tpl.ExecuteTemplate(&buf, base, top); err != nil {
			return err
		}
		out := strings.TrimSpace(strings.ReplaceAll(buf.String(), "<no value>", ""))
		if out == "" {
			continue
		}
		fmt.Printf("---\n# Source: templates/%s\n%s\n", base, out)
	}
	return nil
}
