"""The explorer page's markup and script (node.explorer renders them): static text, kept
apart so the renderer stays readable. The script sets every value as text, never markup."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>zkpot explorer · {chain}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; margin: 0 0 .3em; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
.facts > span {{ margin-right: 1.5em; }} code {{ font-size: 12px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #ddd;
  text-align: left; font-variant-numeric: tabular-nums; }}
tr[data-round] {{ cursor: pointer; }} tr[data-round]:hover {{ background: #f3f6ff; }}
#round pre {{ background: #f7f7f7; padding: .6em; overflow-x: auto; }}
.legend span {{ margin-right: 1em; }}
</style></head>
<body data-refresh="{refresh}">
<h1>zkpot explorer · <span id="chain">{chain}</span></h1>
<div class="facts"><span>chain id <code id="chain-id">{chain_id}</code></span>
<span>this node: <b id="role">{role}</b></span></div>
<div class="facts"><span>head: height <b id="head-height">{head_height}</b>,
round <span id="head-round">{head_round}</span>, <code id="head-hash">{head_hash}</code></span>
<span>final: height <b id="fin-height">{fin_height}</b>, <code id="fin-hash">{fin_hash}</code>
</span><span>current round <b id="round-now">{round}</b></span>
<span>peers <b id="peer-count">{peers}</b></span></div>

<h2>Learning curve</h2>
<div class="legend"><span style="color:#1f6feb">&#9632; test accuracy of the global model</span>
<span style="color:#d9822b">&#9632; proven score k / batch</span></div>
<canvas id="plot" width="720" height="240"></canvas>

<h2>Recent blocks</h2>
<table id="blocks"><thead><tr><th>height</th><th>round</th><th>who</th><th>score k</th>
<th>proofs k</th><th>test acc.</th><th>status</th><th>hash</th></tr></thead>
<tbody>
{rows}
</tbody></table>

<h2>Round <span id="round-no">(click a block)</span></h2>
<div id="round"></div>

<h2>Peers</h2>
<ul id="peers">
{peer_items}
</ul>
<script>
{script}
</script>
</body></html>
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const short = (h) => (h ? h.slice(0, 12) + "\u2026" : "\u2014");
const text = (v) => (v === null || v === undefined ? "\u2014" : String(v));
let points = [];

function cell(row, value, title) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (title) td.title = title;
  row.appendChild(td);
}

function showBlocks(blocks) {
  const body = document.querySelector("#blocks tbody");
  body.replaceChildren();
  for (const b of blocks.slice().reverse()) {
    if (b.genesis) continue;
    const tr = document.createElement("tr");
    tr.dataset.round = b.round;
    cell(tr, b.height);
    cell(tr, b.round);
    cell(tr, b.members.length ? b.members.length + " contributors" : "proposer " + short(b.proposer));
    cell(tr, b.score);
    cell(tr, b.proofs.map((p) => p.k).join(", "));
    cell(tr, b.accuracy === null || b.accuracy === undefined ? null : b.accuracy.toFixed(3));
    cell(tr, b.final ? "final" : "canonical");
    cell(tr, short(b.hash), b.hash);
    body.appendChild(tr);
  }
}

function plot() {
  const c = $("plot"), g = c.getContext("2d");
  const w = c.width, h = c.height, pad = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#999"; g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.beginPath(); g.moveTo(pad, 5); g.lineTo(pad, h - pad); g.lineTo(w - 5, h - pad); g.stroke();
  for (const v of [0, 0.5, 1]) g.fillText(v.toFixed(1), 4, h - pad - v * (h - pad - 5) + 4);
  if (!points.length) return;
  const rounds = points.map((p) => p.round);
  const lo = Math.min(...rounds), hi = Math.max(...rounds, lo + 1);
  const x = (r) => pad + ((r - lo) / (hi - lo)) * (w - pad - 10);
  const y = (v) => h - pad - v * (h - pad - 5);
  g.fillText("round " + lo, pad, h - 10); g.fillText("round " + hi, w - 60, h - 10);
  for (const [key, color] of [["accuracy", "#1f6feb"], ["score_share", "#d9822b"]]) {
    g.strokeStyle = color; g.fillStyle = color; g.beginPath();
    let first = true;
    for (const p of points) {
      if (p[key] === null || p[key] === undefined) continue;
      if (first) g.moveTo(x(p.round), y(p[key])); else g.lineTo(x(p.round), y(p[key]));
      first = false;
    }
    g.stroke();
    for (const p of points) {
      if (p[key] === null || p[key] === undefined) continue;
      g.beginPath(); g.arc(x(p.round), y(p[key]), 3, 0, 2 * Math.PI); g.fill();
    }
  }
  c.dataset.points = String(points.length);
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function showRound(r) {
  $("round-no").textContent = String(r);
  const box = $("round");
  try {
    const d = await getJson("/rounds/" + encodeURIComponent(r));
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(d, null, 2);
    box.replaceChildren(pre);
  } catch (err) {
    box.textContent = String(err);
  }
}

async function refresh() {
  try {
    const [s, bl, pe, cu] = await Promise.all([
      getJson("/status"), getJson("/blocks"), getJson("/peers"), getJson("/curve"),
    ]);
    $("role").textContent = s.role;
    $("head-height").textContent = s.head.height;
    $("head-round").textContent = text(s.head.round);
    $("head-hash").textContent = short(s.head.hash);
    $("fin-height").textContent = s.finalized.height;
    $("fin-hash").textContent = short(s.finalized.hash);
    $("round-now").textContent = text(s.round);
    $("peer-count").textContent = pe.count;
    const acc = new Map(cu.points.map((p) => [p.height, p.accuracy]));
    for (const b of bl.blocks) b.accuracy = acc.get(b.height);
    showBlocks(bl.blocks);
    const ul = $("peers");
    ul.replaceChildren(...pe.peers.map((p) => {
      const li = document.createElement("li");
      li.textContent = p.peer_id + " (" + p.role + ")";
      return li;
    }));
    points = cu.points;
    plot();
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    console.warn("refresh failed:", err);
  }
}

document.querySelector("#blocks").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-round]");
  if (tr) showRound(tr.dataset.round);
});
refresh();
setInterval(refresh, Number(document.body.dataset.refresh));
"""
