"""The explorer page's markup and script (node.explorer renders them): static text, kept
apart so the renderer stays readable. The script sets every value as text, never markup.
(Over 300 lines: static text only.)"""

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
#offline {{ display: none; background: #b3261e; color: #fff; padding: .5em .8em;
  margin: 0 0 .8em; font-weight: 600; }}
#offline.shown {{ display: block; }}
.key {{ color: #1f4fbf; cursor: pointer; text-decoration: underline dotted; }}
.kept {{ color: #777; font-style: italic; }}
#round h3 {{ font-size: 1em; margin: .8em 0 .3em; }}
.bad {{ color: #b3261e; }} .good {{ color: #1a7f37; }}
</style></head>
<body data-refresh="{refresh}" data-aggregates="{aggregates}" data-keep-parent="{keep_parent}">
<div id="offline" role="alert"></div>
<h1>zkpot explorer · <span id="chain">{chain}</span></h1>
<div class="facts"><span>chain id <code id="chain-id">{chain_id}</code></span>
<span>this node: <b id="role">{role}</b></span>
<span>reach it at <code id="addrs">{addrs}</code></span></div>
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
<div id="filter" hidden>blocks of <code id="filter-key"></code>
<button id="filter-clear" type="button">show all</button></div>
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
const KEEP_PARENT = document.body.dataset.keepParent;
const aggregates = document.body.dataset.aggregates === "1";
let points = [];
let blocks = [];
let onlyKey = null;  // a participant key: show only the blocks it took part in
let lastOk = Date.now();

function el(tag, value, cls) {
  const e = document.createElement(tag);
  if (value !== undefined) e.textContent = text(value);
  if (cls) e.className = cls;
  return e;
}

function keyLink(key) {
  const a = el("span", short(key), "key");
  a.title = key + " (click: its blocks)";
  a.dataset.key = key;
  return a;
}

function cell(row, value, title) {
  const td = el("td", value);
  if (title) td.title = title;
  row.appendChild(td);
  return td;
}

function whoCell(row, b) {
  const td = el("td");
  if (b.members.length) {
    td.append("contributors ");
    b.members.forEach((m, i) => { if (i) td.append(", "); td.append(keyLink(m)); });
  } else if (aggregates) {
    td.append(el("span", KEEP_PARENT, "kept"));
  } else {
    td.append("proposer ", keyLink(b.proposer));
  }
  row.appendChild(td);
}

function involves(b, key) {
  return b.proposer === key || b.members.includes(key) || b.proofs.some((p) => p.participant === key);
}

function showBlocks() {
  const body = document.querySelector("#blocks tbody");
  body.replaceChildren();
  $("filter").hidden = onlyKey === null;
  $("filter-key").textContent = onlyKey || "";
  for (const b of blocks.slice().reverse()) {
    if (b.genesis || (onlyKey !== null && !involves(b, onlyKey))) continue;
    const tr = document.createElement("tr");
    tr.dataset.round = b.round;
    cell(tr, b.height);
    cell(tr, b.round);
    whoCell(tr, b);
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

function table(cls, headers, rows) {
  const t = el("table", undefined, cls);
  const hr = document.createElement("tr");
  for (const h of headers) hr.appendChild(el("th", h));
  t.appendChild(hr);
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of r) {
      const td = el("td");
      if (v instanceof Node) td.appendChild(v); else td.textContent = text(v);
      tr.appendChild(td);
    }
    t.appendChild(tr);
  }
  return t;
}

function roundView(d) {
  const out = [];
  const b = d.block;
  const facts = el("p");
  facts.append(
    "batch " + text(d.reveal.batch_index) + (d.reveal.revealed ? " revealed" : " not revealed") +
    ", " + d.reveal.sealed.length + " commits sealed; test accuracy of its global model " +
    (d.accuracy === null || d.accuracy === undefined ? "\u2014" : d.accuracy.toFixed(3)));
  out.push(facts);
  out.push(el("h3", "Block"));
  if (b === null) {
    out.push(el("p", "no canonical block for this round yet"));
  } else {
    const p = el("p");
    p.append("height " + b.height + " by ", keyLink(b.proposer), " (rank " + b.rank + "), score " +
      text(b.score) + (b.final ? ", final" : "") + ": ");
    if (b.members.length) {
      p.append("the global model averages ");
      b.members.forEach((m, i) => { if (i) p.append(", "); p.append(keyLink(m)); });
    } else {
      p.append(el("span", aggregates ? KEEP_PARENT : "the proposer's own model", "kept"));
    }
    out.push(p);
  }
  const rank = new Map(d.ranking.map((r) => [r.participant, r.rank]));
  const proofs = d.proofs.length ? d.proofs : (b ? b.proofs.map((p) => ({...p, valid: true})) : []);
  out.push(el("h3", "Proofs"));
  out.push(table("proofs", ["participant", "k", "rank", "verdict"], proofs.map((p) => [
    keyLink(p.participant), p.k, rank.get(p.participant),
    el("span", p.valid ? "valid" : "invalid: " + text(p.reason), p.valid ? "good" : "bad"),
  ])));
  if (d.commits.length) {
    out.push(el("h3", "Commits"));
    out.push(table("commits", ["participant", "commit"], d.commits.map((c) => [
      keyLink(c.participant), short(c.id)])));
  }
  const agg = Object.entries(d.aggregation || {});
  if (agg.length) {
    out.push(el("h3", "Aggregation messages"));
    out.push(table("aggregation", ["message", "count"], agg));
  }
  if (d.notes.length) {
    out.push(el("h3", "Notes"));
    const ul = el("ul");
    for (const n of d.notes) ul.appendChild(el("li", n));
    out.push(ul);
  }
  return out;
}

async function showRound(r) {
  $("round-no").textContent = String(r);
  const box = $("round");
  try {
    box.replaceChildren(...roundView(await getJson("/rounds/" + encodeURIComponent(r))));
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
    $("addrs").textContent = (s.addrs || []).join(" ") || "\u2014";
    $("head-height").textContent = s.head.height;
    $("head-round").textContent = text(s.head.round);
    $("head-hash").textContent = short(s.head.hash);
    $("fin-height").textContent = s.finalized.height;
    $("fin-hash").textContent = short(s.finalized.hash);
    $("round-now").textContent = text(s.round);
    $("peer-count").textContent = pe.count;
    const acc = new Map(cu.points.map((p) => [p.height, p.accuracy]));
    for (const b of bl.blocks) b.accuracy = acc.get(b.height);
    blocks = bl.blocks;
    showBlocks();
    const ul = $("peers");
    ul.replaceChildren(...pe.peers.map((p) => {
      const li = el("li", p.peer_id + " (" + p.role + ") ");
      li.appendChild(el("code", (p.addrs || []).join(" ")));
      return li;
    }));
    points = cu.points;
    plot();
    lastOk = Date.now();
    $("offline").classList.remove("shown");
    document.body.dataset.updated = String(lastOk);
  } catch (err) {
    const box = $("offline");
    box.textContent = "node unreachable: the data below is stale since " +
      new Date(lastOk).toLocaleTimeString() + " (" + String(err.message || err) + ")";
    box.classList.add("shown");
    document.body.dataset.stale = String(Date.now());
  }
}

document.addEventListener("click", (ev) => {
  const key = ev.target.closest("[data-key]");
  if (key) {
    ev.stopPropagation();
    onlyKey = key.dataset.key;
    showBlocks();
    return;
  }
  const tr = ev.target.closest("#blocks tr[data-round]");
  if (tr) showRound(tr.dataset.round);
});
$("filter-clear").addEventListener("click", () => { onlyKey = null; showBlocks(); });
refresh();
setInterval(refresh, Number(document.body.dataset.refresh));
"""
