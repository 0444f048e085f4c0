// The rl-insens viewer: one frame at a time from the server, plots of the whole run.
"use strict";

const state = { t: 0, frames: 0, run: null, playing: null, series: {}, analysis: {} };
const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const response = await fetch(url);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function plot(name, label) {
  const box = document.createElement("div");
  box.className = "plot";
  box.innerHTML = `<div>${label}</div><canvas id="plot-${name}" width="800" height="160"></canvas>`;
  $("plots").appendChild(box);
  box.querySelector("canvas").addEventListener("click", (event) => {
    const rect = event.target.getBoundingClientRect();
    show(Math.round(((event.clientX - rect.left) / rect.width) * (state.frames - 1)));
  });
}

const LOG_SCALE = new Set(["margin"]);

function draw(name) {
  const canvas = $(`plot-${name}`);
  const log = LOG_SCALE.has(name);
  const values = (state.series[name] || []).map((v) => (log && v !== null ? Math.log10(v) : v));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (finite.length) {
    let low = Math.min(...finite), high = Math.max(...finite);
    if (high === low) { high += 1; low -= 1; }
    const x = (i) => (i / Math.max(1, state.frames - 1)) * (canvas.width - 10) + 5;
    const y = (v) => canvas.height - 8 - ((v - low) / (high - low)) * (canvas.height - 16);
    ctx.strokeStyle = "#1f5fbf";
    ctx.beginPath();
    let started = false;
    values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { started = false; return; }
      if (started) ctx.lineTo(x(i), y(v)); else ctx.moveTo(x(i), y(v));
      started = true;
    });
    ctx.stroke();
    ctx.fillStyle = "#555";
    ctx.font = "18px sans-serif";
    const label = (v) => (log ? `1e${v.toFixed(1)}` : v.toPrecision(3));
    ctx.fillText(label(high), 6, 18);
    ctx.fillText(label(low), 6, canvas.height - 4);
  }
  const cx = (state.t / Math.max(1, state.frames - 1)) * (canvas.width - 10) + 5;
  ctx.strokeStyle = "#d22";
  ctx.beginPath(); ctx.moveTo(cx, 0); ctx.lineTo(cx, canvas.height); ctx.stroke();
}

function drawAll() { Object.keys(state.series).forEach(draw); }

async function show(t) {
  t = Math.max(0, Math.min(state.frames - 1, t));
  state.t = t;
  $("slider").value = t;
  $("frame-counter").textContent = `frame ${t} / ${state.frames - 1}`;
  $("img-screen").src = `/api/image/${t}/screen.png`;
  for (const method of state.run.methods) $(`img-${method}`).src = `/api/image/${t}/${method}.png`;
  drawAll();
  const f = await getJSON(`/api/frame/${t}`);
  if (f.t !== state.t) return;
  const value = f.value === null ? "n/a" : f.value.toFixed(2);
  const margin = state.series.margin[t];
  $("caption").textContent =
    `episode ${f.episode} step ${f.step} | action ${f.action_name} (p=${f.prob.toFixed(2)}) | value ${value}` +
    ` | score ${f.score} | active ${(100 * f.active).toFixed(1)}%` +
    (margin === null || margin === undefined ? "" : ` | margin ${margin.toExponential(2)}`) +
    (f.fresh ? "" : " | maps from an earlier step");
}

async function loadAnalysis() {
  const blocks = Math.ceil(state.frames / 32);
  for (let b = 0; b < blocks; b++) {
    const a = await getJSON(`/api/analysis/${b}`);
    a.margin.forEach((v, i) => { state.series.margin[a.start + i] = v; });
    a.switched.forEach((v, i) => { state.series.switched[a.start + i] = v; });
    draw("margin"); draw("switched");
  }
}

async function showNeuron() {
  const layer = $("layer").value, index = Number($("neuron-index").value);
  try {
    const n = await getJSON(`/api/neuron/${state.t}?layer=${encodeURIComponent(layer)}&index=${index}`);
    $("neuron-info").className = "";
    $("neuron-info").textContent =
      `${n.layer}[${n.index}] at frame ${state.t}: v = ${n.activity.toExponential(3)}, ` +
      `b̂ = ${n.bias.toExponential(3)}, ${n.active ? "active" : "inactive"}`;
    $("neuron-images").innerHTML = n.images
      .map((src, k) => `<img class="neuron-image" alt="ŵ frame ${k}" title="ŵ on stacked frame ${k}" src="${src}">`)
      .join("");
  } catch (error) {
    $("neuron-info").className = "error";
    $("neuron-info").textContent = error.message;
  }
}

async function showInterventions() {
  const t = state.t;
  $("interventions-info").className = "";
  $("interventions-info").textContent = `frame ${t}: playing the episode again up to here...`;
  $("interventions-grid").innerHTML = "";
  try {
    const r = await getJSON(`/api/interventions/${t}`);
    if (r.t !== state.t) return;
    $("interventions-info").textContent =
      `frame ${t}, ${r.noops} no-ops after each move; unedited action ${r.unedited_action}; ` +
      `${r.moves.length - r.dropped} of ${r.moves.length} moves showed on the screen`;
    $("interventions-grid").innerHTML = r.moves.map((m) => {
      const value = m.value_change === null ? "" : `, Δvalue ${m.value_change.toFixed(3)}`;
      const label = `${m.object} ${m.axis} ${m.pixels > 0 ? "+" : ""}${m.pixels}px: ` +
        `Δlogits ${m.logit_change.toFixed(3)}${value}, action ${m.action}` + (m.moved ? "" : " (did not move: dropped)");
      return `<figure class="${m.moved ? "" : "dropped"}"><figcaption>${label}</figcaption>` +
        `<img alt="${label}" src="${m.image}"></figure>`;
    }).join("");
  } catch (error) {
    $("interventions-info").className = "error";
    $("interventions-info").textContent = error.message;
  }
}

function togglePlay() {
  if (state.playing) { clearInterval(state.playing); state.playing = null; $("play").textContent = "play"; return; }
  $("play").textContent = "pause";
  state.playing = setInterval(() => {
    if (state.t >= state.frames - 1) togglePlay(); else show(state.t + 1);
  }, 100);
}

async function main() {
  const run = await getJSON("/api/run");
  state.run = run;
  state.frames = run.frames;
  $("run-name").textContent = `${run.name} · ${run.game}` + (run.complete ? "" : " (interrupted)");
  $("slider").max = run.frames - 1;
  const panels = [["screen", "game"]].concat(run.methods.map((m) => [m, m]));
  $("panels").innerHTML = panels
    .map(([id, label]) => `<figure><figcaption>${label}</figcaption><img id="img-${id}" alt="${label}"></figure>`)
    .join("");
  state.series = {
    action_prob: run.series.action_prob, value: run.series.value, score: run.series.score,
    active: run.series.active, margin: new Array(run.frames).fill(null), switched: new Array(run.frames).fill(null),
  };
  const labels = {
    action_prob: "probability of the chosen action", value: "value", score: "score",
    active: "% active neurons", margin: "stability margin: distance to the nearest switching hyperplane (log scale)",
    switched: "neurons switched since the previous frame",
  };
  Object.entries(labels).forEach(([name, label]) => plot(name, label));
  $("layer").innerHTML = Object.entries(run.layers)
    .map(([name, size]) => `<option value="${name}">${name} (${size})</option>`).join("");
  $("slider").addEventListener("input", (e) => show(Number(e.target.value)));
  $("prev").addEventListener("click", () => show(state.t - 1));
  $("next").addEventListener("click", () => show(state.t + 1));
  $("play").addEventListener("click", togglePlay);
  $("show-neuron").addEventListener("click", showNeuron);
  $("run-interventions").addEventListener("click", showInterventions);
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type === "number") return;
    if (e.key === "ArrowRight") { e.preventDefault(); show(state.t + 1); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); show(state.t - 1); }
    else if (e.key === " ") { e.preventDefault(); togglePlay(); }
  });
  await show(0);
  loadAnalysis();
}

main().catch((error) => {
  document.body.innerHTML = `<h1>Cannot show this run</h1><p id="error" class="error">${error.message}</p>`;
});
