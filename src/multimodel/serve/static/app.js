// The demo page: three panels that call the JSON API (/api/image, /api/audio, /api/text); each
// shows its tasks' held-out scores (/api/info) and offers held-out examples to run (/api/examples).
"use strict";

let INFO = null; // GET /api/info: the checkpoint's tasks and the server's limits

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- talking to the API ---------------------------------------------------------------------

function detailText(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI's 422: a list of {loc, msg}
    return detail.map((d) => `${(d.loc || []).filter((x) => x !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  return `the server answered ${status}`;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`could not reach the server (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: report the status */ }
  if (!response.ok) {
    const error = new Error(detailText(body, response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}

// -- rendering answers -----------------------------------------------------------------------

function formatSeconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

function setStatus(panel, text, isError = false) {
  const status = $(".status", panel);
  status.textContent = text || "";
  status.classList.toggle("error", Boolean(isError));
}

function answer(kind, p) {
  const token = p.task_token
    ? el("span", { class: "chip token", "data-role": "token", title: "the decoder's task token", text: p.task_token })
    : el("span", { class: "chip token", "data-role": "token", title: "classification skips the decoder", text: "no token (classifier)" });
  return el("div", { class: "answer", "data-task": p.task },
    el("div", { class: "kind", text: kind }),
    el("div", { class: "output", "data-role": "output", text: p.output || "(empty output)" }),
    el("div", { class: "meta" },
      el("span", { class: "chip", text: p.task, title: p.tasks && p.tasks.length > 1
        ? "these tasks share the task token, so the model computes the same answer for each"
        : "the checkpoint's task" }),
      token,
      el("span", { class: "chip", "data-role": "seconds", title: "decoding time", text: formatSeconds(p.seconds) })));
}

function topList(top) {
  const list = el("ol", { class: "top", "data-role": "top" });
  for (const { label, probability } of top) {
    const bar = el("span");
    bar.style.width = `${(100 * probability).toFixed(1)}%`;
    list.append(el("li", {},
      el("span", { class: "label", title: label, text: label }),
      el("span", { class: "bar" }, bar),
      el("span", { class: "p", text: `${(100 * probability).toFixed(1)}%` })));
  }
  return list;
}

// The server's pretty tree: one constituent a line, two spaces a level, "TAG word" at the leaves.
function parsePretty(text) {
  const root = { children: [] };
  const stack = [{ depth: -1, node: root }];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const depth = (line.length - line.trimStart().length) / 2;
    const [label, ...words] = line.trim().split(" ");
    const node = { label, word: words.join(" "), children: [] };
    while (stack[stack.length - 1].depth >= depth) stack.pop();
    stack[stack.length - 1].node.children.push(node);
    stack.push({ depth, node });
  }
  return root.children;
}

function treeList(nodes, top = true) {
  const list = el("ul", top ? { class: "tree", "data-role": "tree" } : {});
  for (const node of nodes) {
    const box = el("span", { class: "node", text: node.label });
    if (node.word) box.append(el("span", { class: "word", text: node.word }));
    const item = el("li", {}, box);
    if (node.children.length) item.append(treeList(node.children, false));
    list.append(item);
  }
  return list;
}

function textAnswer(p, to) {
  if (to !== "parse-tree") return answer(`Translation into ${to[0].toUpperCase()}${to.slice(1)}`, p);
  const card = answer("Parse tree", p);
  const output = $("[data-role=output]", card);
  output.classList.add("linear");
  if (p.tree) {
    output.before(el("div", { class: "tree-wrap" }, treeList(parsePretty(p.tree))));
    card.append(el("details", {}, el("summary", { text: "as text" }), el("pre", { class: "tree-text", text: p.tree })));
  } else {
    output.before(el("div", { class: "status error", "data-role": "tree-error",
      text: `The output is not a well-formed tree${p.tree_error ? `: ${p.tree_error}` : ""}. The raw output:` }));
  }
  return card;
}

// -- the panels ------------------------------------------------------------------------------

function tooBig(file) {
  if (INFO && file.size > INFO.max_upload_bytes) {
    return `${file.name} is ${(file.size / 1e6).toFixed(1)} MB; this server accepts files up to ` +
      `${(INFO.max_upload_bytes / 1e6).toFixed(1)} MB`;
  }
  return null;
}

async function run(panel, busyText, work) {
  const buttons = panel.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  $(".results", panel).replaceChildren();
  setStatus(panel, busyText);
  try {
    const cards = await work();
    $(".results", panel).replaceChildren(...cards);
    setStatus(panel, "");
  } catch (err) {
    setStatus(panel, err.message, true);
  } finally {
    buttons.forEach((b) => { b.disabled = panel.classList.contains("unavailable"); });
  }
}

function upload(path, blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  return api(path, { method: "POST", body: form });
}

function setUpImagePanel() {
  const panel = $("#image-panel");
  const input = $("#image-file");
  const preview = $("#image-preview");
  preview.addEventListener("error", () => { preview.hidden = true; }); // not an image: the server will say so
  input.addEventListener("change", () => {
    const file = input.files[0];
    $(".file span", panel).textContent = file ? file.name : "Choose an image…";
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
    $(".results", panel).replaceChildren();
    setStatus(panel, "");
  });
  $("#image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = input.files[0];
    if (!file) { setStatus(panel, "choose an image first", true); return; }
    const big = tooBig(file);
    if (big) { setStatus(panel, big, true); return; }
    run(panel, "classifying and captioning…", async () => {
      const body = await upload("/api/image", file, file.name);
      return body.predictions.map((p) => {
        if (!p.top) return answer("Caption", p);
        const card = answer("Class", p);
        card.append(topList(p.top));
        return card;
      });
    });
  });
}

// Recording: microphone samples captured with the Web Audio API and sent as a 16-bit WAV,
// which the server reads like any uploaded file (MediaRecorder's WebM is not readable by libsndfile).
function encodeWav(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const ascii = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  ascii(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  ascii(36, "data"); view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const x of chunk) { view.setInt16(offset, Math.max(-1, Math.min(1, x)) * 0x7fff, true); offset += 2; }
  }
  return new Blob([view], { type: "audio/wav" });
}

// Runs on the audio thread: hands each block of microphone samples to the page.
const CAPTURE_WORKLET = `registerProcessor("capture", class extends AudioWorkletProcessor {
  process(inputs) { if (inputs[0].length) this.port.postMessage(inputs[0][0].slice(0)); return true; }
});`;

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const context = new AudioContext();
  const module = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
  await context.audioWorklet.addModule(module);
  const source = context.createMediaStreamSource(stream);
  const capture = new AudioWorkletNode(context, "capture");
  const chunks = [];
  capture.port.onmessage = (e) => chunks.push(e.data);
  source.connect(capture);
  capture.connect(context.destination); // silent: the processor writes no output
  return {
    seconds: () => chunks.reduce((n, c) => n + c.length, 0) / context.sampleRate,
    stop() {
      source.disconnect(); capture.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      context.close();
      URL.revokeObjectURL(module);
      return encodeWav(chunks, context.sampleRate);
    },
  };
}

function setUpAudioPanel() {
  const panel = $("#audio-panel");
  const input = $("#audio-file");
  const preview = $("#audio-preview");
  const record = $("#audio-record");
  let recorded = null; // a Blob from the microphone, used instead of the chosen file
  const show = (blob, name) => {
    $(".file span", panel).textContent = name;
    preview.hidden = false;
    preview.src = URL.createObjectURL(blob);
    $(".results", panel).replaceChildren();
    setStatus(panel, "");
  };
  input.addEventListener("change", () => {
    recorded = null;
    if (input.files[0]) show(input.files[0], input.files[0].name);
  });

  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.AudioWorkletNode) {
    record.hidden = false;
    let recording = null;
    let timer = null;
    const stop = () => {
      clearInterval(timer);
      recorded = recording.stop();
      recording = null;
      input.value = "";
      record.textContent = "● Record";
      record.classList.remove("recording");
      show(recorded, "recording.wav");
    };
    record.addEventListener("click", async () => {
      if (recording) { stop(); return; }
      try {
        recording = await startRecording();
      } catch (err) {
        setStatus(panel, `no microphone (${err.message})`, true);
        return;
      }
      record.textContent = "■ Stop";
      record.classList.add("recording");
      const limit = INFO ? INFO.max_audio_seconds : 60;
      timer = setInterval(() => { if (recording && recording.seconds() >= limit) stop(); }, 250);
    });
  }

  $("#audio-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = recorded || input.files[0];
    if (!file) { setStatus(panel, "choose or record audio first", true); return; }
    const name = recorded ? "recording.wav" : file.name;
    const big = tooBig(new File([file], name));
    if (big) { setStatus(panel, big, true); return; }
    run(panel, "transcribing…", async () => [answer("Transcript", await upload("/api/audio", file, name))]);
  });
}

function setUpTextPanel() {
  const panel = $("#text-panel");
  $("#text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#text-input").value;
    const to = $("#text-to").value;
    run(panel, to === "parse-tree" ? "parsing…" : "translating…", async () => {
      const p = await api("/api/text", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, to }),
      });
      return [textAnswer(p, to)];
    });
  });
}

// -- what the model learned: held-out scores and examples -------------------------------------

const PANELS = { image: "#image-panel", audio: "#audio-panel", text: "#text-panel" };
// The 'to' of /api/text that asks for a task token: To-German -> german, To-Spanish -> spanish.
function targetOf(token) {
  return token ? token.replace(/^To-/, "").toLowerCase() : undefined;
}

function panelOf(modality) {
  return PANELS[modality] ? $(PANELS[modality]) : null;
}

function taskInfo(name) {
  return INFO.tasks.find((t) => t.name === name);
}

// "top-1 acc %" 62.04 → "top-1 acc 62.0%"; a label without a unit keeps the number bare.
function formatMetric(label, value) {
  const percent = label.endsWith(" %");
  return { name: percent ? label.slice(0, -2) : label, text: `${value.toFixed(1)}${percent ? "%" : ""}`,
    unit: percent ? "%" : "" };
}

function scoreLine(task) {
  const line = el("div", { class: "score", "data-role": "score", "data-task": task.name },
    el("span", { class: "score-task", title: task.description, text: task.name }));
  if (!task.scores) {
    line.classList.add("not-evaluated");
    line.append(el("span", { "data-role": "not-evaluated", title: INFO.scores_note || "", text: "not evaluated" }));
    return line;
  }
  for (const m of task.scores.headline) {
    const { name, text, unit } = formatMetric(m.label, m.value);
    const metric = el("span", { class: "metric", "data-metric": m.metric,
      title: m.lower_is_better ? "lower is better" : "higher is better" },
      `${name} `, el("b", { text }));
    if (m.blind !== null && m.blind !== undefined) {
      metric.append(" ", el("span", { class: "blind", "data-role": "blind", title: INFO.blind_control,
        text: `(blind ${m.blind.toFixed(1)}${unit})` }));
    }
    line.append(metric);
  }
  if (task.scores.num_examples) {
    line.append(el("span", { class: "muted", text: `on ${task.scores.num_examples} held-out examples` }));
  }
  for (const group of task.scores.groups || []) line.append(groupLine(group));
  return line;
}

// One report_by field of a task (e.g. speech by voice): the headline metric of each value's examples.
function groupLine(group) {
  const { name, unit } = formatMetric(group.label, 0);
  const cells = group.values.map((v) => `${v.value} ${v.score.toFixed(1)}${unit} (${v.count})`);
  return el("div", { class: "groups muted", "data-role": "groups", "data-field": group.field,
    title: `${name} of each ${group.field}'s held-out examples alone (examples); ` +
      (group.lower_is_better ? "lower is better" : "higher is better"),
    text: `${name} by ${group.field}: ${cells.join(" · ")}` });
}

function showScores() {
  for (const [modality, selector] of Object.entries(PANELS)) {
    const tasks = INFO.tasks.filter((t) => t.input_modality === modality);
    $("[data-role=scores]", $(selector)).replaceChildren(...tasks.map(scoreLine));
  }
  const note = $("#scores-note");
  const parts = [];
  if (INFO.scores_file) parts.push(`Scores on held-out test data from ${INFO.scores_file}; ${INFO.blind_control}.`);
  if (INFO.scores_note) parts.push(INFO.scores_note);
  note.textContent = parts.join(" ");
  note.hidden = !parts.length;
}

function exampleButton(example, task) {
  const button = el("button", { type: "button", class: "example secondary", "data-task": example.task,
    "data-index": String(example.index), title: `${example.input_description} · ${task.description}` });
  if (example.input_text !== null) button.dataset.text = example.input_text;
  if (task.input_modality === "image") {
    button.classList.add("thumb");
    button.append(el("img", { src: example.input_url, alt: `${example.task} example ${example.index}` }));
  } else if (task.input_modality === "text") {
    button.append(el("span", { class: "chip", text: example.task }), el("span", { text: example.input_text }));
  } else {
    button.textContent = "Transcribe";
  }
  return button;
}

function exampleItem(example, task) {
  const button = exampleButton(example, task);
  if (task.input_modality !== "audio") return button;
  const item = el("div", { class: "utterance" });
  if (example.input_url) {
    item.append(el("audio", { controls: "", preload: "none", src: example.input_url }));
  } else {
    item.append(el("div", { class: "said", text: `“${example.input_text}”` }));
  }
  item.append(el("div", { class: "muted", text: example.input_description }), button);
  return item;
}

function showExamples(listing) {
  const lists = {};
  for (const held of listing.tasks) {
    const task = taskInfo(held.task);
    const panel = panelOf(held.input_modality);
    if (!task || !panel) continue;
    const list = lists[held.input_modality] || (lists[held.input_modality] = []);
    if (held.unavailable) {
      list.push(el("p", { class: "muted unavailable-examples", "data-role": "no-examples", "data-task": held.task,
        text: `${held.task}: no held-out examples here (${held.unavailable})` }));
      continue;
    }
    const group = el("div", { class: `example-group ${held.input_modality}`, "data-task": held.task },
      el("div", { class: "group-title", text: held.task }));
    for (const example of held.examples) group.append(exampleItem(example, task));
    list.push(group);
  }
  for (const [modality, selector] of Object.entries(PANELS)) {
    const box = $("[data-role=examples] .example-list", $(selector));
    box.replaceChildren(...(lists[modality] || [el("p", { class: "muted", text: "no held-out examples" })]));
  }
}

function exampleAnswer(result) {
  const { example, prediction: p } = result;
  const task = taskInfo(example.task);
  let card;
  if (p.top) {
    card = answer("Class", p);
    card.append(topList(p.top));
  } else if (task.input_modality === "image") {
    card = answer("Caption", p);
  } else if (task.input_modality === "audio") {
    card = answer("Transcript", p);
  } else {
    card = textAnswer(p, targetOf(task.task_token) || "english");
  }
  card.classList.add("example-answer");
  const input = el("div", { class: "example-input", "data-role": "example-input" },
    el("span", { class: "kind", text: `held-out example ${example.index} of ${example.task}` }));
  if (example.input_url && task.input_modality === "image") {
    input.append(el("img", { src: example.input_url, alt: "" }));
  }
  if (example.input_text) input.append(el("div", { text: example.input_text }));
  input.append(el("div", { class: "muted", text: example.input_description }));
  card.prepend(input);
  const reference = el("div", { class: "reference", "data-role": "reference" },
    el("span", { class: "kind", text: "reference" }),
    el("div", { class: "output", text: result.reference }));
  reference.append(el("span", { class: `chip match ${result.matches ? "yes" : "no"}`, "data-role": "match",
    text: result.matches ? "✓ matches the reference" : "✗ differs from the reference" }));
  if (result.reference_tree) {
    reference.append(el("details", {}, el("summary", { text: "reference as a tree" }),
      el("div", { class: "tree-wrap" }, treeList(parsePretty(result.reference_tree)))));
  }
  if (result.references.length > 1) {
    reference.append(el("details", {}, el("summary", { text: `all ${result.references.length} references` }),
      el("ul", { class: "references" }, ...result.references.map((r) => el("li", { text: r })))));
  }
  $("[data-role=output]", card).after(reference);
  return card;
}

function setUpExamples() {
  for (const selector of Object.values(PANELS)) {
    const panel = $(selector);
    $("[data-role=examples]", panel).addEventListener("click", (event) => {
      const button = event.target.closest("button.example");
      if (!button) return;
      const { task, index } = button.dataset;
      const info = taskInfo(task);
      if (info && info.input_modality === "text") { // what was run, ready to edit and run again
        $("#text-input").value = button.dataset.text || "";
        const to = targetOf(info.task_token);
        if (to && INFO.text_targets.includes(to)) $("#text-to").value = to;
      }
      run(panel, `running ${task} on held-out example ${index}…`, async () => {
        const result = await api(`/api/examples/${encodeURIComponent(task)}/${index}`, { method: "POST" });
        return [exampleAnswer(result)];
      });
    });
  }
}

async function loadExamples() {
  try {
    showExamples(await api("/api/examples"));
    document.body.dataset.examples = "ready";
  } catch (err) {
    for (const selector of Object.values(PANELS)) {
      $("[data-role=examples] .example-list", $(selector)).replaceChildren(
        el("p", { class: "muted", "data-role": "no-examples", text: `no held-out examples: ${err.message}` }));
    }
    document.body.dataset.examples = "failed";
  }
}

function disablePanel(panel, why) {
  panel.classList.add("unavailable");
  panel.querySelectorAll("button, input, select, textarea").forEach((x) => { x.disabled = true; });
  setStatus(panel, why);
}

async function init() {
  setUpImagePanel();
  setUpAudioPanel();
  setUpTextPanel();
  setUpExamples();
  try {
    INFO = await api("/api/info");
  } catch (err) {
    $("#checkpoint").textContent = `could not read the checkpoint's tasks: ${err.message}`;
    return;
  }
  $("#checkpoint").textContent =
    `checkpoint ${INFO.checkpoint || "(unnamed)"} · tasks: ${INFO.tasks.map((t) => t.name).join(", ")}`;
  if (!INFO.image) disablePanel($("#image-panel"), "this checkpoint has no image task");
  if (!INFO.audio) disablePanel($("#audio-panel"), "this checkpoint has no speech task");
  const select = $("#text-to");
  for (const option of select.options) {
    if (!INFO.text_targets.includes(option.value)) {
      option.disabled = true;
      option.textContent += " (not in this checkpoint)";
    }
  }
  for (const to of INFO.text_targets) { // a task token a config added (To-Spanish): its own option
    if (![...select.options].some((option) => option.value === to)) {
      select.add(new Option(`${to[0].toUpperCase()}${to.slice(1)}`, to));
    }
  }
  if (!INFO.text_targets.length) {
    disablePanel($("#text-panel"), "this checkpoint has no text task");
  } else if (select.selectedOptions[0].disabled) {
    select.value = INFO.text_targets[0];
  }
  showScores();
  document.body.dataset.ready = "true";
  loadExamples(); // reading the test splits may take a while the first time: the panels work meanwhile
}

document.addEventListener("DOMContentLoaded", init);
