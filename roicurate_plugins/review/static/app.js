// roicurate review: one ROI at a time in the order the server gives (closest to the threshold first), or a grid of crops.
// Every answer is POSTed at once; the server writes it to the labels file before it replies.
"use strict";

const $ = (id) => document.getElementById(id);
let S = null;            // the server's state: order, human answers, model verdict, probabilities, progress
let pos = 0;             // position in S.order
let gridStart = 0;       // first position of the grid page
const GRID = 48;
let queue = Promise.resolve();   // keys and clicks run one after another, none is dropped

async function call(url, body) {
  const init = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(url, init);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function fail(e) { $("error").textContent = String(e.message || e); }

function firstUnanswered(from) {
  for (let k = from; k < S.order.length; k++) if (S.human[S.order[k]] < 0) return k;
  return Math.min(from, S.order.length - 1);
}

function verdict(roi) {  // what apply writes: the person's answer, else the model's verdict
  return S.human[roi] >= 0 ? S.human[roi] === 1 : S.model_accepted[roi];
}

function showProgress() {
  const p = S.progress;
  $("progress").textContent = `reviewed ${p.reviewed} · left ${p.left} · errors found ${p.errors_found} · ` +
    `about ${p.errors_expected_left.toFixed(1)} errors expected in the rest`;
  $("unit").textContent = `${S.unit} — ${S.rois} ROIs, model ${S.model} at threshold ${S.threshold.toFixed(3)}; ` +
    `answers kept in ${S.file}`;
  $("note").textContent = S.note || "";
}

function drawTrace(t) {
  const svg = $("trace");
  svg.replaceChildren();
  $("notrace").hidden = !!t;
  svg.style.display = t ? "" : "none";
  if (!t) return;
  const lo = Math.min(...t.min), hi = Math.max(...t.max), n = t.min.length;
  const y = (v) => (150 - 140 * (v - lo) / Math.max(hi - lo, 1e-12)).toFixed(1);
  const pts = [];
  for (let k = 0; k < n; k++) {
    const x = (1000 * k / Math.max(n - 1, 1)).toFixed(1);
    pts.push(`${x},${y(t.min[k])}`, `${x},${y(t.max[k])}`);
  }
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
}

async function showRoi() {
  const roi = S.order[pos];
  const info = await call(`api/roi/${roi}`);
  $("roi").textContent = `ROI ${roi}`;
  $("rank").textContent = `${pos + 1} of ${S.order.length} in review order`;
  const cls = S.classes.join(" + ");
  $("probability").innerHTML = "";
  $("probability").append(`P(${cls}) = ${info.probability.toFixed(3)}: the model `,
    Object.assign(document.createElement("b"), { className: info.model_accepted ? "cell" : "notcell",
      textContent: info.model_accepted ? "accepts" : "rejects" }),
    ` it; P(the model is wrong) = ${info.p_model_wrong.toFixed(2)}`);
  $("answer").textContent = info.human < 0 ? "not answered yet" :
    `your answer: ${info.human === 1 ? "cell" : "not a cell"}`;
  $("answer").className = info.human < 0 ? "" : (info.human === 1 ? "cell" : "notcell");
  $("crop").src = `img/crop/${roi}.png`;
  $("why").src = `img/why/${roi}.png`;
  placeMarker(info.centroid);
  drawTrace(S.has_trace ? await call(`api/trace/${roi}`) : null);
  $("roi").dataset.roi = String(roi);      // set last: the ROI is on the page
}

function placeMarker(c) {
  const img = $("fov"), m = $("marker");
  const place = () => {
    m.style.left = `${(c[1] + 0.5) / S.shape[1] * img.clientWidth}px`;
    m.style.top = `${(c[0] + 0.5) / S.shape[0] * img.clientHeight}px`;
  };
  if (img.complete && img.naturalWidth) place(); else img.addEventListener("load", place, { once: true });
}

function act(fn) {
  queue = queue.then(async () => {
    $("error").textContent = "";
    try { await fn(); } catch (e) { fail(e); }
  });
  return queue;
}

async function answer(label) {
  const roi = S.order[pos];
  S = await call("api/answer", { roi, label });
  showProgress();
  pos = firstUnanswered(pos + 1);
  await showRoi();
}

async function undo() {
  S = await call("api/undo", {});
  showProgress();
  if (S.undone !== null && S.undone !== undefined) pos = S.order.indexOf(S.undone);
  if ($("grid").hidden) await showRoi(); else drawGrid();
}

function move(step) {
  pos = Math.max(0, Math.min(S.order.length - 1, pos + step));
  return showRoi();
}

function drawGrid() {
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const roi of S.order.slice(gridStart, gridStart + GRID)) {
    const t = document.createElement("div");
    t.className = `tile ${verdict(roi) ? "accepted" : "rejected"}${S.human[roi] >= 0 ? " answered" : ""}`;
    t.dataset.roi = String(roi);
    const img = document.createElement("img");
    img.src = `img/crop/${roi}.png`;
    img.alt = `ROI ${roi}`;
    t.append(img, `${roi}: P=${S.probability[roi].toFixed(2)}`);
    t.addEventListener("click", () => act(async () => {
      S = await call("api/answer", { roi, label: verdict(roi) ? 0 : 1 });
      showProgress();
      drawGrid();
    }));
    tiles.appendChild(t);
  }
}

async function toggleGrid() {
  const toGrid = $("grid").hidden;
  $("grid").hidden = !toGrid;
  $("single").hidden = toGrid;
  if (toGrid) { gridStart = pos - (pos % GRID); drawGrid(); }
  else { pos = firstUnanswered(gridStart); await showRoi(); }
}

document.addEventListener("keydown", (ev) => {
  if (!S || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const grid = !$("grid").hidden;
  const keys = grid ? {
    g: toggleGrid, u: undo,
    ArrowRight: () => { gridStart = Math.min(gridStart + GRID, Math.max(0, S.order.length - 1)); drawGrid(); },
    ArrowLeft: () => { gridStart = Math.max(0, gridStart - GRID); drawGrid(); },
  } : {
    y: () => answer(1), n: () => answer(0), s: () => move(1), u: undo, g: toggleGrid,
    ArrowRight: () => move(1), ArrowDown: () => move(1), ArrowLeft: () => move(-1), ArrowUp: () => move(-1),
  };
  const fn = keys[ev.key];
  if (fn) { ev.preventDefault(); act(fn); }
});

for (const [id, fn] of [["yes", () => answer(1)], ["no", () => answer(0)], ["skip", () => move(1)],
                        ["undo", undo], ["grid-on", toggleGrid]]) {
  $(id).addEventListener("click", () => act(fn));
}

act(async () => {
  S = await call("api/state");
  showProgress();
  pos = firstUnanswered(0);   // resume where the answers stop
  await showRoi();
  document.body.dataset.ready = "1";
});
