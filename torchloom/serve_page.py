"""The page `torchloom serve` shows at `/`: a form built from `/metadata` to try the model.

One static HTML file with its script inline (nothing loaded from elsewhere, so it works
offline). It asks `/metadata` what the run takes and builds the form: a field a column for a
table, a text box for text, a drawing canvas for small images (the 8x8 digits, 28x28
Fashion-MNIST) and a file picker for any image (scaled to the model's size in the browser and
sent as a PNG), a box of numbers for a series. The answer shows the class and its
probabilities as bars, a value, labels, an anomaly score or a forecast. The page holds no run
data: with a token, everything it shows comes from calls that send the token typed into it.
"""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>torchloom: __TITLE__</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
         padding: 0 1rem; color: #1d2330; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  .meta { color: #5a6270; margin-top: 0; }
  label { display: block; margin: .35rem 0; }
  label span { display: inline-block; min-width: 12rem; }
  input[type=text], textarea { font: inherit; padding: .25rem .4rem; }
  textarea { width: 100%; min-height: 5rem; }
  button { font: inherit; padding: .35rem 1rem; margin: .6rem .4rem .6rem 0; cursor: pointer; }
  canvas#draw { border: 1px solid #888; background: #000; touch-action: none;
                image-rendering: pixelated; cursor: crosshair; }
  #answer { margin-top: 1rem; }
  #class { font-size: 1.6rem; font-weight: 600; }
  .bar { display: flex; align-items: center; margin: .15rem 0; }
  .bar .name { width: 9rem; overflow: hidden; text-overflow: ellipsis; }
  .bar .track { flex: 1; background: #e7eaf0; height: 1rem; margin: 0 .5rem; }
  .bar .fill { background: #3b6fd8; height: 100%; }
  .bar .value { width: 4.5rem; text-align: right; font-variant-numeric: tabular-nums; }
  #error { color: #b00020; white-space: pre-wrap; }
  #token-box { display: none; margin-bottom: 1rem; }
</style>
</head>
<body>
<h1>torchloom: __TITLE__</h1>
<p class="meta" id="meta">loading what the model takes...</p>
<div id="token-box"><label><span>token</span><input type="text" id="token"
  autocomplete="off"></label><button id="use-token">use token</button></div>
<form id="form"></form>
<div id="answer"><div id="class"></div><div id="bars"></div><div id="other"></div></div>
<div id="error"></div>
<script>
"use strict";
let meta = null;
let lastRequest = null;
const $ = (id) => document.getElementById(id);

function headers() {
  const h = {"Content-Type": "application/json"};
  const token = sessionStorage.getItem("torchloom-token");
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function call(path, body) {
  const options = body === undefined ? {headers: headers()}
    : {method: "POST", headers: headers(), body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const payload = await response.json().catch(() => ({}));
  if (response.status === 401) { $("token-box").style.display = "block"; }
  if (!response.ok) {
    const detail = payload.detail;
    const text = Array.isArray(detail)
      ? detail.map((d) => (d.loc || []).join(".") + ": " + d.msg).join("\\n")
      : (detail || response.statusText);
    throw new Error(text);
  }
  return payload;
}

function field(labelText, input) {
  const label = document.createElement("label");
  const span = document.createElement("span");
  span.textContent = labelText;
  label.append(span, input);
  return label;
}

function buildForm() {
  const form = $("form");
  form.replaceChildren();
  if (meta.input === "table") {
    meta.feature_names.forEach((name, i) => {
      const input = document.createElement("input");
      input.type = "text"; input.name = name; input.id = "column-" + i;
      form.append(field(name, input));
    });
  } else if (meta.input === "text") {
    const area = document.createElement("textarea");
    area.id = "text"; area.placeholder = "a text to classify";
    form.append(area);
  } else if (meta.input === "forecast") {
    const area = document.createElement("textarea");
    area.id = "history";
    area.placeholder = "the series so far, oldest first, numbers separated by commas or spaces";
    form.append(area);
  } else {
    const [channels, height, width] = meta.input_shape;
    if (width * height <= 32 * 32) {
      const canvas = document.createElement("canvas");
      canvas.id = "draw"; canvas.width = width * 24; canvas.height = height * 24;
      form.append(canvas, document.createElement("br"));
      drawing(canvas, Math.max(canvas.width / width * 1.2, 12));
      const clear = document.createElement("button");
      clear.type = "button"; clear.textContent = "clear";
      clear.onclick = () => canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      form.append(clear);
    }
    const picker = document.createElement("input");
    picker.type = "file"; picker.accept = "image/*"; picker.id = "file";
    picker.onchange = () => picked(picker.files[0]);
    form.append(field("or an image file", picker));
  }
  const button = document.createElement("button");
  button.type = "submit"; button.id = "predict"; button.textContent = "predict";
  form.append(button);
}

function drawing(canvas, radius) {
  const context = canvas.getContext("2d");
  let down = false;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  const dot = (event) => {
    const [x, y] = at(event);
    context.fillStyle = "#fff";
    context.beginPath(); context.arc(x, y, radius, 0, 2 * Math.PI); context.fill();
  };
  canvas.addEventListener("pointerdown", (e) => { down = true; dot(e); });
  canvas.addEventListener("pointermove", (e) => { if (down) dot(e); });
  window.addEventListener("pointerup", () => { down = false; });
}

function asPng(source) {
  // The model's size, on black (the data's background), as a PNG without its data: prefix.
  const [channels, height, width] = meta.input_shape;
  const small = document.createElement("canvas");
  small.width = width; small.height = height;
  const context = small.getContext("2d");
  context.fillStyle = "#000"; context.fillRect(0, 0, width, height);
  context.imageSmoothingEnabled = true;
  context.drawImage(source, 0, 0, width, height);
  return small.toDataURL("image/png").split(",")[1];
}

function picked(file) {
  if (!file) return;
  const image = new Image();
  image.onload = () => { predictWith(asPng(image)); URL.revokeObjectURL(image.src); };
  image.src = URL.createObjectURL(file);
}

function currentInput() {
  if (meta.input === "table") {
    const row = {};
    meta.feature_names.forEach((name, i) => {
      const text = $("column-" + i).value.trim();
      row[name] = text === "" ? null : (isNaN(Number(text)) ? text : Number(text));
    });
    return row;
  }
  if (meta.input === "text") return $("text").value;
  if (meta.input === "forecast") {
    return $("history").value.split(/[\\s,]+/).filter((v) => v !== "")
      .map((v) => (v.toLowerCase() === "nan" ? null : Number(v)));
  }
  return asPng($("draw"));
}

async function predictWith(input) {
  $("error").textContent = "";
  lastRequest = {inputs: [input]};
  try {
    const answer = await call("/predict", lastRequest);
    show(answer.predictions[0]);
  } catch (error) {
    $("error").textContent = error.message;
  }
}

function bars(values) {
  const box = $("bars");
  box.replaceChildren();
  Object.entries(values).sort((a, b) => b[1] - a[1]).forEach(([name, value]) => {
    const row = document.createElement("div"); row.className = "bar";
    row.dataset.name = name;
    const label = document.createElement("span"); label.className = "name";
    label.textContent = name;
    const track = document.createElement("span"); track.className = "track";
    const fill = document.createElement("span"); fill.className = "fill";
    fill.style.width = (100 * value).toFixed(1) + "%"; fill.style.display = "block";
    track.append(fill);
    const number = document.createElement("span"); number.className = "value";
    number.textContent = value.toFixed(3);
    row.append(label, track, number);
    box.append(row);
  });
}

function show(row) {
  $("class").textContent = ""; $("bars").replaceChildren(); $("other").textContent = "";
  if ("class" in row) { $("class").textContent = row["class"]; bars(row.probabilities); }
  else if ("labels" in row) {
    const on = Object.entries(row.labels).filter(([, v]) => v).map(([k]) => k);
    $("class").textContent = on.length ? on.join(", ") : "(no label)";
    bars(row.probabilities);
  } else if ("score" in row) {
    $("class").textContent = row.anomaly ? "anomaly" : "normal";
    $("other").textContent = "reconstruction error " + row.score.toPrecision(4);
  } else if ("forecast" in row) {
    $("class").textContent = "forecast";
    $("other").textContent = row.forecast.map((v) => v.toPrecision(5)).join(", ");
  } else {
    const value = row.value;
    $("class").textContent = Array.isArray(value)
      ? value.map((v) => v.toPrecision(5)).join(", ") : value.toPrecision(5);
  }
}

async function start() {
  try {
    meta = await call("/metadata");
  } catch (error) {
    $("meta").textContent = "";
    $("error").textContent = error.message;
    return;
  }
  $("meta").textContent = meta.task + " on " + meta.input + " inputs"
    + (meta.classes ? " (" + meta.classes.length + " classes)" : "")
    + "; run " + meta.run + ", torchloom " + meta.torchloom_version;
  buildForm();
  $("form").onsubmit = (event) => { event.preventDefault(); predictWith(currentInput()); };
}

$("use-token").onclick = () => {
  sessionStorage.setItem("torchloom-token", $("token").value);
  $("token-box").style.display = "none";
  $("error").textContent = "";
  start();
};
start();
</script>
</body>
</html>
"""


def page_html(title: str) -> str:
    """The page, titled with the run's name."""
    return PAGE.replace("__TITLE__", html.escape(title))
