// Renders Ollama TEMPLATEs with Go's own text/template, set up as Ollama's template.Execute sets it up
// (missingkey=zero, the "json" function, .System, .Messages as structs with Role and Content).
// Input on stdin: [{"template": "...", "messages": [{"role": "...", "content": "..."}]}, ...]
// Output on stdout: ["rendered", ...], or {"error": "..."} in place of a string that failed.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

type job struct {
	Template string              `json:"template"`
	Messages []map[string]string `json:"messages"`
}

func main() {
	var jobs []job
	if err := json.NewDecoder(os.Stdin).Decode(&jobs); err != nil {
		panic(err)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	var out []any
	for _, j := range jobs {
		var messages []*Message
		var system []string
		for _, m := range j.Messages {
			messages = append(messages, &Message{Role: m["role"], Content: m["content"]})
			if m["role"] == "system" {
				system = append(system, m["content"])
			}
		}
		t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(j.Template)
		if err != nil {
			out = append(out, map[string]string{"error": err.Error()})
			continue
		}
		var b bytes.Buffer
		data := map[string]any{"System": strings.Join(system, "\n\n"), "Messages": messages, "Tools": nil, "Response": ""}
		if err := t.Execute(&b, data); err != nil {
			out = append(out, map[string]string{"error": err.Error()})
			continue
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
