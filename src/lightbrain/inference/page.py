"""The server's web page: one self-contained HTML file (no external scripts, styles or fonts), which
streams a completion from /v1/completions and keeps the research-only disclaimer in view."""

from __future__ import annotations

import html
import json

from lightbrain import DISCLAIMER

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>LightBrain: __MODEL_HTML__</title>
<style>
  :root { --ink: #1d2433; --muted: #5b6478; --line: #d5dae3; --accent: #1f5fbf; --warn-bg: #fff4d6; --warn: #7a4b00; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f6f7f9; }
  #disclaimer { position: sticky; top: 0; z-index: 1; margin: 0; padding: 10px 20px; background: var(--warn-bg);
    color: var(--warn); border-bottom: 2px solid #e8c46a; font-weight: 600; }
  main { max-width: 860px; margin: 0 auto; padding: 16px 20px 40px; }
  h1 { font-size: 1.4rem; margin: 8px 0 16px; }
  h1 small { font-weight: 400; color: var(--muted); font-size: 0.95rem; margin-left: 8px; }
  label { font-weight: 600; }
  textarea { width: 100%; min-height: 90px; padding: 10px; border: 1px solid var(--line); border-radius: 6px;
    font: inherit; resize: vertical; background: #fff; }
  .controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: end; margin: 12px 0; }
  .controls label { display: flex; flex-direction: column; font-size: 0.85rem; color: var(--muted); }
  .controls input { width: 110px; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; font: inherit; }
  button { padding: 8px 18px; border: 0; border-radius: 6px; font: inherit; font-weight: 600; cursor: pointer; }
  #generate { background: var(--accent); color: #fff; }
  #stop { background: #e3e6ec; color: var(--ink); }
  button:disabled { opacity: 0.5; cursor: default; }
  #output { white-space: pre-wrap; word-wrap: break-word; min-height: 140px; padding: 14px; background: #fff;
    border: 1px solid var(--line); border-radius: 6px; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
    font-size: 0.95rem; }
  #prompt-echo { color: var(--muted); }
  #completion { color: var(--ink); }
  #status { color: var(--muted); font-size: 0.9rem; min-height: 1.5em; }
  #status.error { color: #b00020; }
</style>
</head>
<body>
<p id="disclaimer" role="note">&#9888; __DISCLAIMER_HTML__</p>
<main>
  <h1>LightBrain <small id="model-name">__MODEL_HTML__</small></h1>
  <form id="form">
    <label for="prompt">Prompt</label>
    <textarea id="prompt" name="prompt" placeholder="Type the start of a text, e.g. The patient presented with"></textarea>
    <div class="controls">
      <label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.8"></label>
      <label>Top-k (0 = off) <input id="top_k" type="number" min="0" step="1" value="40"></label>
      <label>Max tokens <input id="max_tokens" type="number" min="1" max="__MAX_TOKENS__" step="1" value="__DEFAULT_TOKENS__"></label>
      <button id="generate" type="submit">Generate</button>
      <button id="stop" type="button" disabled>Stop</button>
    </div>
  </form>
  <div id="output" aria-live="polite"><span id="prompt-echo"></span><span id="completion"></span></div>
  <p id="status"></p>
</main>
<script>
"use strict";
const MODEL = __MODEL_JSON__;
const $ = (id) => document.getElementById(id);
let controller = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("stop").disabled = !busy;
}

// One server-sent event: "data: {json}" lines; returns the finish reason or usage when present.
function handleEvent(event, state) {
  for (const line of event.split("\\n")) {
    if (!line.startsWith("data: ")) continue;
    const data = line.slice(6);
    if (data === "[DONE]") { state.done = true; continue; }
    const message = JSON.parse(data);
    if (message.error) throw new Error(message.error.message);
    for (const choice of message.choices || []) {
      if (choice.text) { $("completion").textContent += choice.text; state.pieces += 1; }
      if (choice.finish_reason) state.finish = choice.finish_reason;
    }
    if (message.usage) state.usage = message.usage;
  }
}

async function generate(event) {
  event.preventDefault();
  if (controller) controller.abort();
  controller = new AbortController();
  const prompt = $("prompt").value;
  const body = {
    model: MODEL, prompt: prompt, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), top_k: Math.trunc(Number($("top_k").value)),
    max_tokens: Math.trunc(Number($("max_tokens").value)),
  };
  $("prompt-echo").textContent = prompt;
  $("completion").textContent = "";
  setBusy(true);
  setStatus("generating\\u2026");
  const started = performance.now();
  const state = { pieces: 0, finish: null, usage: null, done: false };
  try {
    const response = await fetch("/v1/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const detail = await response.json().catch(() => null);
      throw new Error(detail && detail.error ? detail.error.message : response.status + " " + response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        handleEvent(buffer.slice(0, cut), state);
        buffer = buffer.slice(cut + 2);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const tokens = state.usage ? state.usage.completion_tokens : state.pieces;
    const why = state.finish === "length" ? "reached max tokens" : "model stopped";
    setStatus("done: " + tokens + " tokens in " + seconds.toFixed(1) + " s (" + why + ")");
  } catch (err) {
    if (err.name === "AbortError") setStatus("stopped");
    else setStatus("error: " + err.message, true);
  } finally {
    setBusy(false);
    controller = null;
  }
}

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
});
</script>
</body>
</html>
"""


def render_page(model_name: str, max_tokens: int) -> str:
    """The page for `model_name`; the max-tokens box is capped at the server's limit."""
    replacements = {
        "__DISCLAIMER_HTML__": html.escape(DISCLAIMER),
        "__MODEL_HTML__": html.escape(model_name),
        "__MODEL_JSON__": json.dumps(model_name).replace("<", "\\u003c"),
        "__MAX_TOKENS__": str(max_tokens),
        "__DEFAULT_TOKENS__": str(min(100, max_tokens)),
    }
    page = _PAGE
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page
