/* pyro-vae explore: the page's script (plain JavaScript, no framework, no build step).
 *
 * It speaks only to this server's endpoints (POST api/NAME with a JSON object of parameters; the endpoints and their
 * limits are in pyro_vae/explorer/endpoints.py), draws the scatter of posterior means on a canvas, and keeps at most
 * one request in flight per picture: while one is out, only the newest wish waits, so a slider stays live however
 * fast it moves. window.explore exposes the state for the browser test (tests/test_explore_browser.py).
 */
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf"];
const UNLABELLED = "#3b6ea5";
const PAD = 18;             // canvas pixels around the points
const PICK_RADIUS = 7;      // how near (canvas pixels) the pointer must be to a point to pick it
const SLIDER_STEPS = 200;   // positions of each slider over its range
const TILE_PX = 112;        // the on-screen height of the selected image, its reconstruction and the decoding
const STRIP_PX = 72;        // ... of a strip's tiles

const $ = (id) => document.getElementById(id);
const state = {
  info: null, points: null, pixels: new Float32Array(0), a: null, b: null, encoded: null, z: null,
  layer: 1, coordinate: null,
};

function say(message) { $("status").textContent = message || ""; }

async function call(name, params) {
  const response = await fetch(`api/${name}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params || {}),
  });
  if (!response.ok) throw new Error((await response.text()).trim() || `${name}: HTTP ${response.status}`);
  return response;
}
const askJSON = async (name, params) => (await call(name, params)).json();

/* Shows url in img once loaded, scaled so a tile is `height` pixels high (whole multiples: no smoothing). */
function loadInto(img, url, height) {
  return new Promise((resolve) => {
    img.onload = () => {
      const tileHeight = state.info.image_shape[1];
      const scale = Math.max(1, Math.round(height / tileHeight));
      img.style.width = `${img.naturalWidth * scale}px`;
      resolve(true);
    };
    img.onerror = () => resolve(false);
    img.src = url;
  });
}

/* A picture fed by one endpoint. */
class LivePicture {
  constructor(img, height) { this.img = img; this.height = height; this.wish = null; this.busy = false; this.shown = 0; }

  show(name, params) {
    this.wish = [name, params];
    if (!this.busy) this.pump();
  }

  async pump() {
    this.busy = true;
    while (this.wish) {
      const [name, params] = this.wish;
      this.wish = null;
      try {
        const blob = await (await call(name, params)).blob();
        const old = this.img.src;
        await loadInto(this.img, URL.createObjectURL(blob), this.height);
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
        this.shown += 1;
        this.img.dataset.shown = String(this.shown);
        say("");
      } catch (error) {
        say(error.message);
      }
    }
    this.busy = false;
  }
}

const pictures = {};

/* ---- the scatter ---------------------------------------------------------------------------------------------- */

function colourOf(i) {
  const labels = state.points.labels;
  return labels ? PALETTE[((labels[i] % 10) + 10) % 10] : UNLABELLED;
}

function extent(values) {
  let low = Infinity, high = -Infinity;
  for (const v of values) { if (v < low) low = v; if (v > high) high = v; }
  return high > low ? [low, high] : [low - 1, high + 1];
}

function placePoints() {
  const canvas = $("scatter");
  const { x, y } = state.points;
  const [x0, x1] = extent(x), [y0, y1] = extent(y);
  const sx = (canvas.width - 2 * PAD) / (x1 - x0), sy = (canvas.height - 2 * PAD) / (y1 - y0);
  state.pixels = new Float32Array(2 * x.length);
  for (let i = 0; i < x.length; i++) {
    state.pixels[2 * i] = PAD + (x[i] - x0) * sx;
    state.pixels[2 * i + 1] = canvas.height - PAD - (y[i] - y0) * sy;
  }
}

function drawScatter() {
  const canvas = $("scatter"), ctx = canvas.getContext("2d");
  const n = state.points.x.length, byColour = new Map();
  for (let i = 0; i < n; i++) {
    const colour = colourOf(i);
    if (!byColour.has(colour)) byColour.set(colour, []);
    byColour.get(colour).push(i);
  }
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 0.65;
  for (const [colour, members] of byColour) {
    ctx.fillStyle = colour;
    ctx.beginPath();
    for (const i of members) {
      ctx.moveTo(state.pixels[2 * i] + 2.2, state.pixels[2 * i + 1]);
      ctx.arc(state.pixels[2 * i], state.pixels[2 * i + 1], 2.2, 0, 2 * Math.PI);
    }
    ctx.fill();
  }
  ctx.globalAlpha = 1;
  mark(ctx, state.a, "A", []);
  mark(ctx, state.b, "B", [3, 2]);
  canvas.dataset.points = String(n);
}

function mark(ctx, index, name, dash) {
  if (index === null) return;
  const px = state.pixels[2 * index], py = state.pixels[2 * index + 1];
  ctx.setLineDash(dash);
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#111";
  ctx.beginPath();
  ctx.arc(px, py, 7, 0, 2 * Math.PI);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.font = "bold 13px system-ui, sans-serif";
  ctx.fillStyle = "#111";
  ctx.fillText(name, px + 9, py - 8);
}

function nearest(px, py) {
  let best = null, bestDistance = PICK_RADIUS * PICK_RADIUS;
  for (let i = 0; i < state.pixels.length / 2; i++) {
    const dx = state.pixels[2 * i] - px, dy = state.pixels[2 * i + 1] - py, d = dx * dx + dy * dy;
    if (d <= bestDistance) { best = i; bestDistance = d; }
  }
  return best;
}

function pointerAt(event) {
  const canvas = $("scatter"), box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

function nameOf(index) {
  const labels = state.points.labels;
  if (!labels) return `#${index}`;
  const legend = state.info.legend;
  return `#${index}, ${legend[labels[index]] ?? labels[index]}`;
}

function hover(event) {
  const [px, py] = pointerAt(event);
  const index = nearest(px, py), box = $("hover");
  if (index === null) { box.hidden = true; return; }
  if (box.dataset.index !== String(index)) {
    box.dataset.index = String(index);
    loadInto($("hover-image"), `api/image?index=${index}`, 84);
    $("hover-text").textContent = nameOf(index);
  }
  box.hidden = false;
  const canvas = $("scatter"), scale = canvas.getBoundingClientRect().width / canvas.width;
  box.style.left = `${Math.min(state.pixels[2 * index] * scale + 12, canvas.clientWidth - 110)}px`;
  box.style.top = `${Math.min(state.pixels[2 * index + 1] * scale + 12, canvas.clientHeight - 130)}px`;
}

function click(event) {
  const [px, py] = pointerAt(event);
  const index = nearest(px, py);
  if (index === null) return;
  if (event.shiftKey) setB(index); else select(index);
}

async function loadPoints() {
  const params = { view: $("view").value };
  if (params.view !== "pca") params.x = Number($("axis-x").value);
  if (params.view === "coords") params.y = Number($("axis-y").value);
  try {
    state.points = await askJSON("points", params);
  } catch (error) { say(error.message); return; }
  $("axes").textContent = `x: ${state.points.axes[0]}; y: ${state.points.axes[1]}`;
  $("axis-x-label").hidden = params.view === "pca";
  $("axis-y-label").hidden = params.view !== "coords";
  placePoints();
  drawScatter();
}

/* ---- the selected point: its image, reconstruction, sliders and traversal ------------------------------------- */

function chosenClass() {
  const value = $("class").value;
  return value === "auto" ? null : Number(value);
}

/* {label: ...} for a model with classes (the chosen class, else `fallback` when it is not null), else {}. */
function labelParams(fallback) {
  if (!state.info.classes.length) return {};
  const chosen = chosenClass();
  if (chosen !== null) return { label: chosen };
  return fallback === null || fallback === undefined ? {} : { label: fallback };
}

async function select(index) {
  let encoded;
  try {
    encoded = await askJSON("encode", { index });
  } catch (error) { say(error.message); return; }
  state.a = index;
  state.encoded = encoded;
  state.z = encoded.mean.slice();
  drawScatter();
  const image = $("selected-image");
  image.dataset.index = String(index);
  await loadInto(image, `api/image?index=${index}`, TILE_PX);
  await loadInto($("image-a"), `api/image?index=${index}`, 72);
  $("selected-text").textContent = nameOf(index);
  $("caption-a").textContent = `A: ${nameOf(index)}`;
  $("reset").disabled = false;
  const own = state.info.classes.length ? { label: encoded.decode_label } : {};
  pictures.reconstruction.show("decode", { z: encoded.mean, ...own });
  buildSliders();
  redecode();
  interpolate();
}

function setB(index) {
  state.b = index;
  drawScatter();
  loadInto($("image-b"), `api/image?index=${index}`, 72);
  $("caption-b").textContent = `B: ${nameOf(index)}`;
  interpolate();
}

function layerRange() {
  const layer = state.info.layers[state.layer - 1];
  return [layer.start, layer.start + layer.size];
}

function buildSliders() {
  const box = $("sliders"), info = state.info;
  box.replaceChildren();
  const [start, end] = layerRange();
  for (let k = start; k < end; k++) {
    const low = info.slider.low[k], high = info.slider.high[k];
    const row = document.createElement("div");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = info.coordinates[k];
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: low, max: high, step: (high - low) / SLIDER_STEPS, value: state.z[k] });
    input.dataset.coordinate = String(k);
    input.setAttribute("aria-label", info.coordinates[k]);
    const output = document.createElement("output");
    output.textContent = state.z[k].toFixed(2);
    input.addEventListener("input", () => {
      state.z[k] = Number(input.value);
      output.textContent = state.z[k].toFixed(2);
      row.classList.add("moved");
      redecode();
      if (state.coordinate !== k) { state.coordinate = k; traverse(); }
    });
    row.append(name, input, output);
    box.append(row);
  }
  if (state.coordinate === null || state.coordinate < start || state.coordinate >= end) state.coordinate = start;
  traverse();
}

function redecode() {
  if (state.z === null) return;
  const layer = state.info.layers.length > 1 ? { layer: state.layer } : {};
  pictures.decoded.show("decode", { z: state.z, ...layer, ...labelParams(state.encoded.decode_label) });
}

function traverse() {
  if (state.z === null) return;
  $("traverse-name").textContent = state.info.coordinates[state.coordinate];
  pictures.traverse.show("traverse", {
    z: state.z, coordinate: state.coordinate, steps: state.info.defaults.traverse,
    ...labelParams(state.encoded.decode_label),
  });
}

function resetSliders() {
  if (state.encoded === null) return;
  state.z = state.encoded.mean.slice();
  buildSliders();
  redecode();
}

/* ---- between two points, and the prior ------------------------------------------------------------------------ */

function boundedNumber(input, low, high) {
  const value = Math.round(Number(input.value));
  const bounded = Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : low;
  input.value = String(bounded);
  return bounded;
}

function interpolate() {
  if (state.a === null || state.b === null) return;
  const steps = boundedNumber($("steps"), 2, state.info.limits.max_strip);
  pictures.interpolation.show("interpolate", {
    a: state.a, b: state.b, steps, mode: $("mode").value, ...labelParams(null),
  });
}

function drawSamples() {
  const n = boundedNumber($("count"), 1, state.info.limits.max_strip);
  const seed = boundedNumber($("seed"), 0, state.info.limits.max_seed);
  pictures.samples.show("sample", { n, seed, ...labelParams(null) });
}

/* ---- start ---------------------------------------------------------------------------------------------------- */

function options(select, entries) {
  select.replaceChildren(...entries.map(([value, text]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    return option;
  }));
}

function buildControls(info) {
  const views = { pca: "PCA of the means", coords: "two coordinates", label: "coordinate against label" };
  options($("view"), info.views.map((v) => [v, views[v]]));
  $("view").value = info.view;
  const coordinates = info.coordinates.map((name, k) => [String(k), name]);
  options($("axis-x"), coordinates);
  options($("axis-y"), coordinates);
  $("axis-y").value = coordinates.length > 1 ? "1" : "0";
  if (info.classes.length) {
    options($("class"), [["auto", "the point's own (samples: each in turn)"], ...info.classes.map((c, i) => [String(i), c])]);
    $("class-label").hidden = false;
  }
  if (info.layers.length > 1) {
    options($("layer"), info.layers.map((layer, i) => [String(i + 1), `${layer.name} (${layer.size})`]));
    $("layer-label").hidden = false;
  }
  $("legend").replaceChildren(...info.legend.map((name, i) => {
    const entry = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i % 10];
    entry.append(swatch, name);
    return entry;
  }));
}

function listen() {
  const canvas = $("scatter");
  canvas.addEventListener("mousemove", hover);
  canvas.addEventListener("mouseleave", () => { $("hover").hidden = true; });
  canvas.addEventListener("click", click);
  for (const id of ["view", "axis-x", "axis-y"]) $(id).addEventListener("change", loadPoints);
  $("class").addEventListener("change", () => { redecode(); traverse(); interpolate(); drawSamples(); });
  $("layer").addEventListener("change", () => {
    state.layer = Number($("layer").value);
    if (state.z !== null) { buildSliders(); redecode(); }
  });
  $("reset").addEventListener("click", resetSliders);
  $("steps").addEventListener("change", interpolate);
  $("mode").addEventListener("change", interpolate);
  $("draw").addEventListener("click", drawSamples);
  $("next").addEventListener("click", () => { $("seed").value = String(Number($("seed").value) + 1); drawSamples(); });
}

async function start() {
  try {
    state.info = await askJSON("info");
  } catch (error) { say(`cannot reach the explorer: ${error.message}`); return; }
  $("description").textContent = `${state.info.description}; ${state.info.structure}, latent ` +
    `${state.info.latent_dims.join(" + ")}`;
  pictures.reconstruction = new LivePicture($("reconstruction"), TILE_PX);
  pictures.decoded = new LivePicture($("decoded"), TILE_PX);
  pictures.traverse = new LivePicture($("traverse"), STRIP_PX);
  pictures.interpolation = new LivePicture($("interpolation"), STRIP_PX);
  pictures.samples = new LivePicture($("samples"), STRIP_PX);
  $("steps").value = String(state.info.defaults.interpolate);
  $("count").value = String(state.info.defaults.samples);
  buildControls(state.info);
  listen();
  await loadPoints();
  drawSamples();
}

window.explore = {
  state,
  pictures,
  pixelOf: (index) => [state.pixels[2 * index], state.pixels[2 * index + 1]],
  idle: () => Object.values(pictures).every((p) => !p.busy && p.wish === null),
};

start();
