// dtp view: a run's episodes, step by step, with r, A, G and D over the camera frame.
// Reads the JSON that dtp.analysis.view embeds in #dtp-data; no network, no libraries.
"use strict";

const DATA = JSON.parse(document.getElementById("dtp-data").textContent);
const STYLE = DATA.style;
const SCALE_TO = 384; // frame width on screen, in CSS pixels

// Overlays, drawn in this order. Scene ground-truth groups (task parts, distractors, lookalikes, and any
// group a run records, e.g. the robot) join as dashed outlines with their own toggles.
const LAYERS = [
  { id: "r", label: "r relevance", kind: "heat", field: "r", lut: STYLE.r_lut, on: false },
  { id: "A", label: "A attention", kind: "heat", field: "a", lut: STYLE.a_lut, on: false },
  { id: "D", label: "D pruned", kind: "fill", field: "d", colour: STYLE.d, on: true },
  { id: "G", label: "G region", kind: "outline", field: "g", colour: STYLE.g, on: true },
];
for (const [group, colour] of Object.entries(STYLE.truth)) {
  LAYERS.push({ id: "truth:" + group, label: STYLE.truth_labels[group], kind: "truth", group, colour, on: false });
}

const state = { primary: null, panels: [], step: 0, timer: null, filter: "", heatAlpha: STYLE.map_alpha };
const decoded = new Map(); // episode key -> decoded maps (Uint8Arrays, sprite image)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function bits(b64, n) {
  // packed bits (numpy packbits: first value in the highest bit) -> n values of 0 / 1
  const packed = bytes(b64);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (packed[i >> 3] >> (7 - (i & 7))) & 1;
  return out;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Number.isInteger(v)) return String(v);
  return Number(v).toPrecision(digits);
}

function configLabel(ep) {
  if (!ep.dtp_enabled) return ep.config + " (DTP off)";
  let name = ep.config === "dtp" ? "DTP" : ep.config;
  if (!name.includes("tau=") && ep.tau !== null && ep.tau !== undefined) name += ", tau = " + ep.tau;
  return name;
}

function result(ep) {
  return el("span", { class: ep.success ? "ok" : "fail" }, ep.success ? "success" : "failure");
}

function mapsOf(ep) {
  if (!ep.maps) return null;
  if (!decoded.has(ep.key)) {
    const m = ep.maps;
    const cells = m.steps * m.grid[0] * m.grid[1];
    const d = { captured: bits(m.captured, m.steps), scored: bits(m.scored, m.steps), truth: {} };
    if (m.r) {
      d.r = bytes(m.r); d.a = bytes(m.a); d.g = bits(m.g, cells); d.d = bits(m.d, cells);
      for (const [g, b64] of Object.entries(m.truth || {})) d.truth[g] = bits(b64, cells);
    }
    d.sheet = new Image();
    d.sheet.onload = () => render();
    if (m.sheet) d.sheet.src = m.sheet;
    decoded.set(ep.key, d);
  }
  return decoded.get(ep.key);
}

// ---- the episode list ----------------------------------------------------------------------
function buildList() {
  const tbody = document.querySelector("#episodes tbody");
  tbody.replaceChildren();
  for (const ep of DATA.episodes) {
    if (state.filter && ep.task !== state.filter) continue;
    const row = el("tr", { class: "ep", "data-key": ep.key, onclick: () => select(ep.key) },
      el("td", {}, ep.task), el("td", {}, ep.seed), el("td", {}, ep.config), el("td", {}, result(ep)),
      el("td", {}, ep.length));
    tbody.append(row);
  }
  markSelection();
}

function markSelection() {
  const shown = new Set(state.panels.map((e) => e.key));
  for (const row of document.querySelectorAll("#episodes tr.ep")) {
    row.classList.toggle("selected", row.dataset.key === state.primary);
    row.classList.toggle("partner", row.dataset.key !== state.primary && shown.has(row.dataset.key));
  }
}

// The selected episode and, on the same scene, the baseline beside DTP (or DTP beside the baseline).
function partnersOf(ep) {
  const same = DATA.episodes.filter((e) => e.task === ep.task && e.seed === ep.seed && e.key !== ep.key);
  let other;
  if (ep.dtp_enabled) other = same.find((e) => !e.dtp_enabled);
  else other = same.find((e) => e.config === "dtp") || same.find((e) => e.dtp_enabled);
  if (!other) return [ep];
  return ep.dtp_enabled ? [other, ep] : [ep, other];
}

function select(key) {
  const ep = DATA.episodes.find((e) => e.key === key);
  state.primary = key;
  state.panels = partnersOf(ep);
  const longest = Math.max(...state.panels.map((e) => e.length));
  const scrub = document.getElementById("scrub");
  scrub.max = String(Math.max(0, longest - 1));
  setStep(Math.min(state.step, longest - 1));
  buildPanels();
  markSelection();
  render();
}

// ---- panels ----------------------------------------------------------------------------------
function buildPanels() {
  const ep = state.panels[state.panels.length - 1];
  document.getElementById("scene-header").replaceChildren(
    el("h2", {}, `${ep.task}, seed ${ep.seed}`),
    el("div", {}, `"${ep.instruction || ""}"`));
  const box = document.getElementById("panels");
  box.replaceChildren();
  for (const e of state.panels) {
    const m = e.maps;
    const scale = m && m.size ? Math.max(1, Math.floor(SCALE_TO / Math.max(m.size[0], m.size[1]))) : 4;
    const w = m && m.size ? m.size[1] * scale : SCALE_TO;
    const h = m && m.size ? m.size[0] * scale : SCALE_TO / 2;
    const frame = el("canvas", { class: "frame", width: w, height: h, "data-key": e.key });
    const spark = el("canvas", { class: "spark", width: w, height: 54 });
    const panel = el("div", { class: "panel", "data-key": e.key },
      el("h3", {}, configLabel(e), " \u2014 ", result(e), ` in ${e.length} steps`),
      frame, el("div", { class: "bars" }), spark, el("div", { class: "spark-key" }),
      el("table", { class: "numbers" }), el("div", { class: "note" }));
    panel.scale = scale;
    box.append(panel);
  }
}

function drawHeat(ctx, vals, off, grid, cell, lut) {
  const [h, w] = grid;
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    const c = lut[vals[off + i * w + j]];
    ctx.fillStyle = `rgba(${c[0]},${c[1]},${c[2]},${state.heatAlpha})`;
    ctx.fillRect(j * cell[1], i * cell[0], cell[1], cell[0]);
  }
}

function outlineSegments(mask, off, grid) {
  const [h, w] = grid;
  const at = (i, j) => i >= 0 && j >= 0 && i < h && j < w && mask[off + i * w + j] === 1;
  const segs = [];
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    if (!at(i, j)) continue;
    if (!at(i - 1, j)) segs.push([j, i, j + 1, i]);
    if (!at(i + 1, j)) segs.push([j, i + 1, j + 1, i + 1]);
    if (!at(i, j - 1)) segs.push([j, i, j, i + 1]);
    if (!at(i, j + 1)) segs.push([j + 1, i, j + 1, i + 1]);
  }
  return segs;
}

function strokeSegments(ctx, segs, cell, colour, width, dash = []) {
  ctx.save();
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.setLineDash(dash); ctx.lineCap = "round";
  ctx.beginPath();
  for (const [x0, y0, x1, y1] of segs) {
    ctx.moveTo(x0 * cell[1], y0 * cell[0]);
    ctx.lineTo(x1 * cell[1], y1 * cell[0]);
  }
  ctx.stroke();
  ctx.restore();
}

function drawFrame(panel, ep, t) {
  const canvas = panel.querySelector("canvas.frame");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const m = ep.maps;
  const d = mapsOf(ep);
  if (!m || !m.sheet) {
    ctx.fillStyle = "#ddd";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText("no frames recorded for this run", 12, 24);
    return;
  }
  const [H, W] = m.size;
  const s = panel.scale;
  if (d.sheet.complete && d.sheet.naturalWidth) {
    const r = Math.floor(t / m.columns), c = t % m.columns;
    ctx.drawImage(d.sheet, c * W, r * H, W, H, 0, 0, W * s, H * s);
  }
  const grid = m.grid;
  if (!d.r || !d.captured[t]) return;
  const cell = [(H * s) / grid[0], (W * s) / grid[1]];
  const off = t * grid[0] * grid[1];
  for (const layer of LAYERS) {
    if (!layer.on) continue;
    if (layer.kind === "heat") drawHeat(ctx, d[layer.field], off, grid, cell, layer.lut);
    else if (layer.kind === "fill") {
      const mask = d[layer.field];
      ctx.fillStyle = layer.colour; ctx.globalAlpha = STYLE.d_alpha;
      for (let i = 0; i < grid[0]; i++) for (let j = 0; j < grid[1]; j++)
        if (mask[off + i * grid[1] + j]) ctx.fillRect(j * cell[1], i * cell[0], cell[1], cell[0]);
      ctx.globalAlpha = 1; ctx.strokeStyle = layer.colour; ctx.lineWidth = 1.5;
      for (let i = 0; i < grid[0]; i++) for (let j = 0; j < grid[1]; j++)
        if (mask[off + i * grid[1] + j]) ctx.strokeRect(j * cell[1] + 1.5, i * cell[0] + 1.5, cell[1] - 3, cell[0] - 3);
    } else if (layer.kind === "outline") {
      const segs = outlineSegments(d[layer.field], off, grid);
      strokeSegments(ctx, segs, cell, STYLE.g_casing, 4);
      strokeSegments(ctx, segs, cell, layer.colour, 2);
    } else if (layer.kind === "truth" && d.truth[layer.group] && d.scored[t]) {
      strokeSegments(ctx, outlineSegments(d.truth[layer.group], off, grid), cell, layer.colour, 2, [5, 4]);
    }
  }
}

function gradient(lut) {
  const stops = [0, 64, 128, 192, 255].map((i) => `rgb(${lut[i].join(",")}) ${Math.round((i / 255) * 100)}%`);
  return `linear-gradient(to right, ${stops.join(", ")})`;
}

function colourBar(name, lut, peak, mark) {
  const bar = el("span", { class: "bar", style: `background:${gradient(lut)}` });
  if (mark !== null && mark !== undefined && peak > 0 && mark <= peak) {
    bar.append(el("span", { class: "mark", title: "threshold tau * a_m", style: `left:${(100 * mark) / peak}%` }));
  }
  return el("span", { class: "key" }, `${name} 0`, bar, fmt(peak));
}

function drawBars(panel, ep, t) {
  const box = panel.querySelector(".bars");
  const m = ep.maps;
  box.replaceChildren();
  if (!m || !m.r || !mapsOf(ep).captured[t]) return;
  box.append(colourBar("r", STYLE.r_lut, m.r_max[t], null), colourBar("A", STYLE.a_lut, m.a_max[t], m.threshold[t]));
  if (m.threshold[t] !== null) {
    box.append(el("span", { class: "key" }, "threshold tau*a_m ",
      el("span", { class: "swatch", style: `background:${STYLE.d}` }), fmt(m.threshold[t])));
  }
}

function drawSpark(panel, ep, t) {
  const canvas = panel.querySelector("canvas.spark");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, n = ep.length;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#f4f4f4"; ctx.fillRect(0, 0, W, H);
  const pruned = ep.steps.n_pruned || [], irr = ep.steps.irrelevant_fraction || [];
  const most = Math.max(1, ...pruned.map((v) => v || 0));
  const bw = W / Math.max(1, n);
  ctx.fillStyle = STYLE.d;
  pruned.forEach((v, i) => { if (v) ctx.fillRect(i * bw, H - (v / most) * (H - 4), Math.max(1, bw - 0.5), (v / most) * (H - 4)); });
  ctx.strokeStyle = "#333"; ctx.lineWidth = 1.2; ctx.beginPath();
  let pen = false;
  irr.forEach((v, i) => {
    if (v === null || v === undefined) { pen = false; return; }
    const x = (i + 0.5) * bw, y = H - v * (H - 4);
    if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    pen = true;
  });
  ctx.stroke();
  ctx.fillStyle = "#1565c0"; ctx.fillRect(Math.min(t, n - 1) * bw, 0, Math.max(1.5, bw), H);
  panel.querySelector(".spark-key").textContent =
    `over the episode: magenta bars = tokens pruned (tallest ${most}), line = irrelevant attention share (0-1), blue = this step`;
}

function drawNumbers(panel, ep, t) {
  const s = ep.steps, i = Math.min(t, ep.length - 1);
  const grid = ep.maps && ep.maps.grid ? ep.maps.grid[0] * ep.maps.grid[1] : null;
  const val = (f) => (s[f] && i < s[f].length ? s[f][i] : null);
  const rows = [
    ["step", `${i} of ${ep.length - 1}`],
    ["fired", fmt(val("fired"))],
    ["pruned", fmt(val("n_pruned")) + (grid ? ` of ${grid} tokens` : "")],
    ["G size", fmt(val("n_region"))],
    ["margin (max outside-G A / a_m - tau)", fmt(val("margin"))],
    ["irrelevant attention (share outside G)", fmt(val("irrelevant_fraction"))],
    ["irrelevant attention (sum outside G)", fmt(val("irrelevant_attention"))],
    ["action changed by pass 2", fmt(val("action_changed"))],
    ["action change (L2)", fmt(val("action_l2"))],
  ];
  panel.querySelector("table.numbers").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  const note = panel.querySelector(".note");
  const ended = t >= ep.length;
  panel.classList.toggle("ended", ended);
  if (ended) note.textContent = `The episode ended at step ${ep.length - 1} (${ep.success ? "success" : "failure"}).`;
  else if (!ep.maps) note.textContent = "No frames or maps were recorded for this run: `dtp eval --record-maps --out NEW` records them.";
  else if (!ep.maps.r || !mapsOf(ep).captured[i]) {
    note.textContent = "No r, G, A or D at this step: the config ran with DTP off and without capture " +
      "(as dtp demo runs its baseline); dtp eval captures the baseline's maps.";
  }
  else note.textContent = "";
}

function render() {
  const t = state.step;
  document.getElementById("step-label").textContent = `step ${t}`;
  for (const panel of document.querySelectorAll("#panels .panel")) {
    const ep = state.panels.find((e) => e.key === panel.dataset.key);
    const i = Math.min(t, ep.length - 1);
    drawFrame(panel, ep, i);
    drawBars(panel, ep, i);
    drawSpark(panel, ep, t);
    drawNumbers(panel, ep, t);
  }
}

function setStep(t) {
  const scrub = document.getElementById("scrub");
  state.step = Math.max(0, Math.min(Number(scrub.max), t));
  scrub.value = String(state.step);
}

// ---- controls --------------------------------------------------------------------------------
function buildControls() {
  const toggles = document.getElementById("toggles");
  for (const layer of LAYERS) {
    const box = el("input", { type: "checkbox", "data-layer": layer.id });
    box.checked = layer.on;
    box.addEventListener("change", () => { layer.on = box.checked; render(); });
    const swatch = layer.kind === "heat" ? gradient(layer.lut) : layer.colour;
    toggles.append(el("label", {}, box, el("span", { class: "swatch", style: `background:${swatch}` }), layer.label));
  }
  const alpha = el("input", { type: "range", id: "heat-alpha", min: "0.1", max: "1", step: "0.05", value: String(state.heatAlpha),
                              "aria-label": "opacity of r and A" });
  alpha.addEventListener("input", () => { state.heatAlpha = Number(alpha.value); render(); });
  toggles.append(el("label", {}, "r/A opacity ", alpha));
  const scrub = document.getElementById("scrub");
  scrub.addEventListener("input", () => { setStep(Number(scrub.value)); render(); });
  document.getElementById("prev").addEventListener("click", () => { setStep(state.step - 1); render(); });
  document.getElementById("next").addEventListener("click", () => { setStep(state.step + 1); render(); });
  document.getElementById("play").addEventListener("click", togglePlay);
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLSelectElement) return;
    if (ev.key === "ArrowLeft") { setStep(state.step - 1); render(); ev.preventDefault(); }
    else if (ev.key === "ArrowRight") { setStep(state.step + 1); render(); ev.preventDefault(); }
    else if (ev.key === " ") { togglePlay(); ev.preventDefault(); }
  });
  const filter = document.getElementById("task-filter");
  for (const task of [...new Set(DATA.episodes.map((e) => e.task))]) filter.append(el("option", { value: task }, task));
  filter.addEventListener("change", () => { state.filter = filter.value; buildList(); });
}

function togglePlay() {
  const button = document.getElementById("play");
  if (state.timer) { clearInterval(state.timer); state.timer = null; button.textContent = "play"; return; }
  button.textContent = "pause";
  state.timer = setInterval(() => {
    if (state.step >= Number(document.getElementById("scrub").max)) { togglePlay(); return; }
    setStep(state.step + 1); render();
  }, 120);
}

function buildHeader() {
  const s = DATA.spec;
  const n = DATA.episodes.length;
  const wins = DATA.episodes.filter((e) => e.success).length;
  document.getElementById("run-header").replaceChildren(
    el("h1", {}, `dtp view: ${DATA.run}`),
    el("div", { class: "sub" },
      `model ${s.model}, ${s.variant} variant, ${s.distractors} distractors (${s.palette}), seed set ${s.seed}; ` +
      `${n} episodes (${wins} succeeded), configs ${DATA.configs.join(", ")}; ` +
      (DATA.recorded ? `${DATA.recorded} with frames and maps` : "no frames recorded (dtp eval --record-maps)")));
  document.getElementById("legend").replaceChildren(
    el("p", {}, "r: the instruction's attention to each image patch (prompt -> image); A: the action tokens' " +
      "attention (Eq. 4), each scaled to its step's maximum (the bars under a frame give the values). " +
      "G (white outline): the important region; D (magenta): the patches pass 2 did not see. Dashed outlines: " +
      "the simulator's ground truth where the run scored it."),
    el("p", {}, "A good map: G holds the named object, its goal and the gripper; A is brightest inside G; " +
      "D covers distractors, never the task. Keys: left/right arrows step, space plays."));
}

buildHeader();
buildControls();
buildList();
if (DATA.episodes.length) {
  const first = DATA.episodes.find((e) => e.dtp_enabled && e.maps) || DATA.episodes.find((e) => e.dtp_enabled) || DATA.episodes[0];
  select(first.key);
}
window.dtpView = { state, render, setStep, select, layers: LAYERS }; // for scripted checks (tests)
