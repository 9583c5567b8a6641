// attnkit's attention viewer: reads the JSON block "data" and draws it; no network request.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);

function bytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// Little-endian float16 (as Python wrote them) to float32, through a table of all 65,536 values.
let HALF = null;
function halfTable() {
  const table = new Float32Array(65536);
  for (let x = 0; x < 65536; x++) {
    const exponent = (x >> 10) & 31, mantissa = x & 1023, sign = x >> 15 ? -1 : 1;
    if (exponent === 0) table[x] = sign * Math.pow(2, -14) * (mantissa / 1024);
    else if (exponent === 31) table[x] = mantissa ? NaN : sign * Infinity;
    else table[x] = sign * Math.pow(2, exponent - 15) * (1 + mantissa / 1024);
  }
  return table;
}

function halves(text) {
  if (!HALF) HALF = halfTable();
  const raw = bytes(text);
  const half = new Uint16Array(raw.buffer, 0, raw.length >> 1);
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = HALF[half[i]];
  return out;
}

const state = { map: 0, head: 0, query: 0 };
const decoded = [];

// The weights of map m, float32 (H * T * S), decoded the first time they are needed.
function weightsOf(m) {
  if (!decoded[m]) decoded[m] = halves(D.maps[m].weights);
  return decoded[m];
}

// The weight of map m, head h, query i, key j.
function at(m, h, i, j) {
  const shape = D.maps[m].shape;
  return weightsOf(m)[(h * shape[1] + i) * shape[2] + j];
}
window.attnkit = { data: D, state: state, weight: at };

// values(n) -> weight in [0, 1] of cell n of a rows x cols image, drawn one pixel per cell and
// scaled to the canvas without smoothing.
function paint(canvas, rows, cols, values) {
  const image = new ImageData(cols, rows), px = image.data;
  for (let n = 0; n < rows * cols; n++) {
    const v = Math.round(255 * (1 - Math.min(1, Math.max(0, values(n)))));
    px[4 * n] = v;
    px[4 * n + 1] = v;
    px[4 * n + 2] = 255;
    px[4 * n + 3] = 255;
  }
  const buffer = document.createElement("canvas");
  buffer.width = cols;
  buffer.height = rows;
  buffer.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(buffer, 0, 0, canvas.width, canvas.height);
}

function draw(canvas, m, h) {
  const shape = D.maps[m].shape, W = weightsOf(m), base = h * shape[1] * shape[2];
  paint(canvas, shape[1], shape[2], (n) => W[base + n]);
}

const thumbs = [];

function drawThumb(canvas, m, h) {
  if (!thumbs[m]) thumbs[m] = bytes(D.maps[m].thumbs);
  const [rows, cols] = D.maps[m].thumb_shape, base = h * rows * cols;
  paint(canvas, rows, cols, (n) => thumbs[m][base + n] / 255);
}

function summary() {
  const prediction = typeof D.prediction === "string" ? D.prediction : JSON.stringify(D.prediction);
  document.getElementById("summary").textContent =
    "prediction: " + prediction + "   |   fidelity (max |captured - fused output|): " + D.fidelity.toExponential(2);
}

// The model view: a row of head thumbnails per attention module.
function modelView() {
  const box = document.getElementById("model");
  D.maps.forEach((map, m) => {
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("span");
    label.textContent = label.title = map.module + " (" + map.kind + ")";
    row.appendChild(label);
    for (let h = 0; h < map.heads; h++) {
      const thumb = document.createElement("canvas");
      thumb.width = thumb.height = 40;
      thumb.className = "thumb";
      thumb.dataset.map = m;
      thumb.dataset.head = h;
      thumb.title = map.module + ", head " + h;
      drawThumb(thumb, m, h);
      thumb.onclick = () => select(m, h);
      row.appendChild(thumb);
    }
    box.appendChild(row);
  });
}

function select(m, h) {
  state.map = m;
  state.head = h;
  state.query = Math.min(state.query, D.maps[m].shape[1] - 1);
  document.querySelectorAll("canvas.thumb").forEach(
    (c) => c.classList.toggle("on", +c.dataset.map === m && +c.dataset.head === h));
  const map = D.maps[m];
  document.getElementById("title").textContent =
    map.module + " (" + map.kind + "), head " + h + ": queries down, keys across";
  draw(document.getElementById("matrix"), m, h);
  refresh();
}

function refresh() {
  headView();
  overlay();
  stepView();
}

// The matrix cell under a pointer event, [query, key], or null.
function cell(event) {
  const shape = D.maps[state.map].shape, box = event.target.getBoundingClientRect();
  const j = Math.floor((event.clientX - box.left) / box.width * shape[2]);
  const i = Math.floor((event.clientY - box.top) / box.height * shape[1]);
  return i < 0 || j < 0 || i >= shape[1] || j >= shape[2] ? null : [i, j];
}

function matrixEvents() {
  const canvas = document.getElementById("matrix");
  canvas.onmousemove = (event) => {
    const found = cell(event);
    if (!found) return;
    const map = D.maps[state.map], [i, j] = found;
    document.getElementById("readout").textContent = "query " + i + " '" + map.rows[i] + "' -> key " + j +
      " '" + map.cols[j] + "': " + at(state.map, state.head, i, j).toFixed(4);
  };
  canvas.onclick = (event) => {
    const found = cell(event);
    if (found) {
      state.query = found[0];
      refresh();
    }
  };
}

// The head view: queries on the left, keys on the right, lines from the chosen query.
function headView() {
  const box = document.getElementById("heads"), map = D.maps[state.map], shape = map.shape;
  box.innerHTML = "";
  if (Math.max(shape[1], shape[2]) > D.head_view_tokens) {
    box.textContent = "(" + shape[1] + " x " + shape[2] + " tokens: use the matrix view)";
    return;
  }
  const left = document.createElement("div"), right = document.createElement("div");
  left.className = right.className = "col";
  map.rows.forEach((token, i) => {
    const span = document.createElement("span");
    span.textContent = token;
    span.dataset.query = i;
    if (i === state.query) span.className = "on";
    span.onclick = () => { state.query = i; refresh(); };
    left.appendChild(span);
  });
  map.cols.forEach((token, j) => {
    const span = document.createElement("span");
    span.textContent = token;
    span.dataset.key = j;
    span.title = at(state.map, state.head, state.query, j).toFixed(4);
    right.appendChild(span);
  });
  box.appendChild(left);
  box.appendChild(right);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.id = "headlines";
  box.appendChild(svg);
  const frame = box.getBoundingClientRect();
  svg.setAttribute("width", frame.width);
  svg.setAttribute("height", frame.height);
  const from = left.children[state.query].getBoundingClientRect();
  for (let j = 0; j < shape[2]; j++) {
    const w = at(state.map, state.head, state.query, j);
    if (w < 0.01) continue;
    const to = right.children[j].getBoundingClientRect();
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", from.right - frame.left);
    line.setAttribute("y1", (from.top + from.bottom) / 2 - frame.top);
    line.setAttribute("x2", to.left - frame.left);
    line.setAttribute("y2", (to.top + to.bottom) / 2 - frame.top);
    line.setAttribute("stroke", "rgba(40,80,220," + w + ")");
    line.setAttribute("stroke-width", 1 + 4 * w);
    svg.appendChild(line);
  }
}

// Vision: the chosen query's weights over the patches, laid over the image.
function overlay() {
  if (!D.image || !D.grid) return;
  const box = document.getElementById("image");
  box.innerHTML = "";
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 240;
  canvas.id = "overlay";
  box.appendChild(canvas);
  const ctx = canvas.getContext("2d"), image = new Image();
  image.onload = () => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, 240, 240);
    const patches = D.grid[0] * D.grid[1], shape = D.maps[state.map].shape, first = shape[2] - patches;
    const query = Math.min(state.query, shape[1] - 1), values = [];
    for (let j = 0; j < patches; j++) values.push(at(state.map, state.head, query, first + j));
    const top = Math.max(...values, 1e-9), side = 240 / D.grid[0];
    values.forEach((v, j) => {
      ctx.fillStyle = "rgba(255,60,0," + (0.6 * v / top) + ")";
      ctx.fillRect((j % D.grid[1]) * side, Math.floor(j / D.grid[1]) * side, side, side);
    });
  };
  image.src = "data:image/png;base64," + D.image;
  const caption = document.createElement("div");
  caption.textContent = "weights of query " + state.query + " over the patches";
  box.appendChild(caption);
}

let qkv = null;

// Step by step, for one query and head: q.k, divided by sqrt(d_k), masked, softmax, and z = sum of a v.
function stepView() {
  const box = document.getElementById("step"), S = D.step;
  box.innerHTML = "";
  if (!S) return;
  if (!qkv) qkv = { q: halves(S.q), k: halves(S.k), v: halves(S.v), keep: bytes(S.keep) };
  const [H, T, dk, K] = S.shape, h = Math.min(state.head, H - 1);
  const i = state.map === S.map ? Math.min(state.query, T - 1) : 0;
  const scale = 1 / Math.sqrt(dk), scores = [], scaled = [], masked = [];
  for (let j = 0; j < K; j++) {
    let dot = 0;
    for (let e = 0; e < dk; e++) dot += qkv.q[(h * T + i) * dk + e] * qkv.k[(h * K + j) * dk + e];
    scores.push(dot);
    scaled.push(dot * scale);
    masked.push(qkv.keep[i * K + j] ? dot * scale : -Infinity);
  }
  const top = Math.max(...masked);
  const exps = masked.map((x) => (x === -Infinity ? 0 : Math.exp(x - top)));
  const total = exps.reduce((a, b) => a + b, 0);
  const softmax = exps.map((x) => (total > 0 ? x / total : 0));
  const z = [];
  for (let e = 0; e < Math.min(dk, 8); e++) {
    let sum = 0;
    for (let j = 0; j < K; j++) sum += softmax[j] * qkv.v[(h * K + j) * dk + e];
    z.push(sum);
  }
  const map = D.maps[S.map];
  let page = "<h3>step by step: " + S.module + ", head " + h + ", query " + i + " '" + escapeHtml(map.rows[i]) +
    "' (d_k = " + dk + ")</h3><p>z = softmax(q k<sup>T</sup> / &radic;d_k + mask) v; the first " + z.length +
    " dimensions of z: [" + z.map((x) => x.toFixed(4)).join(", ") + "]</p>";
  page += "<table id='step-table'><tr><th>key</th><th>token</th><th>q&middot;k</th><th>&divide;&radic;d_k</th>" +
    "<th>mask</th><th>softmax</th><th>captured</th></tr>";
  for (let j = 0; j < K; j++) {
    const blocked = !qkv.keep[i * K + j];
    page += "<tr" + (blocked ? " class='blocked'" : "") + "><td>" + j + "</td><td>" + escapeHtml(map.cols[j]) +
      "</td><td>" + scores[j].toFixed(4) + "</td><td>" + scaled[j].toFixed(4) + "</td><td>" +
      (blocked ? "-&infin;" : "0") + "</td><td class='softmax'>" + softmax[j].toFixed(4) +
      "</td><td class='captured'>" + at(S.map, h, i, j).toFixed(4) + "</td></tr>";
  }
  box.innerHTML = page + "</table>";
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

summary();
modelView();
matrixEvents();
select(D.step ? D.step.map : 0, 0);
