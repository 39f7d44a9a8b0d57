// The site's pages: the leaderboard explorer (index.html), the curve comparison (compare.html) and the
// analysis (analysis.html). Data comes from data/*.js (window.APB, APB_ANALYSIS, APB_CURVES); every value is
// put into the page with textContent, never as HTML.
"use strict";

const DATA = window.APB || {fields: [], dimensions: [], rows: [], aps: {}};  // analysis.html loads no rows
const FIELD = Object.fromEntries(DATA.fields.map((name, i) => [name, i]));
const METRICS = DATA.metrics || [];  // [metric, row field, label] per metric column (metrics.yaml's views.site)
const METRIC_LABEL = Object.fromEntries(METRICS.map(([metric, , label]) => [metric, label]));
const HEADLINE = (METRICS.find(([, field]) => field === DATA.headline) || [])[2];  // the column with the ± spread
const COLUMNS = [  // the key numbers right after the AP, so a phone shows them without scrolling the table
  ["AP", (r) => apOf(r).name], ...METRICS.map(([, field, label]) => [label, (r) => r[FIELD[field]], true]),
  ["flags", (r) => r[FIELD.flags].join(" ")],
  ["dataset", (r) => r[FIELD.dataset]], ["structure", (r) => r[FIELD.structure_kind]],
  ["architecture", (r) => r[FIELD.architecture]], ["sparsity", (r) => r[FIELD.sparsity], true],
  ["protocol", (r) => r[FIELD.protocol]], ["venue", (r) => apOf(r).venue || ""], ["year", (r) => apOf(r).year || ""],
  ["effective MACs", (r) => r[FIELD.macs_effective], true], ["non-zero params", (r) => r[FIELD.params_nonzero], true],
  ["model key", (r) => r[FIELD.model_key]],
];
const METRIC_TITLES = new Set(METRICS.map(([, , label]) => label));
const DEFAULT_SORT = COLUMNS.findIndex(([title]) => title === HEADLINE);  // the headline metric, best first
const FILTERS = [["dataset", (r) => [r[FIELD.dataset]]], ["structure", (r) => [r[FIELD.structure_kind]]],
  ["architecture", (r) => [r[FIELD.architecture]]], ["sparsity", (r) => [String(r[FIELD.sparsity])]],
  ["protocol", (r) => [r[FIELD.protocol]]],
  ...DATA.dimensions.map((title) => [title, (r) => apOf(r).taxonomy[title] || []])];
const PAGE_SIZE = 50;
const RANK_ROWS = 25;  // rows of a ranking shown before "show all"
const PICK_CAP = 500;  // models listed in the compare picker at once
const STRUCTURES = {US: "unstructured (US)", S: "structured (S)"};

// The address keeps the view: filters, search, sort, page, chosen rankings and compared models (#a=1&b=2).
function hashState() { return new URLSearchParams(location.hash.slice(1)); }
// A number the address holds, as the page writes it (decimal digits, below *limit*), or null: an address edited
// by hand falls back to the default view instead of breaking it.
function savedIndex(text, limit) {
  const value = /^[0-9]{1,15}$/.test(text || "") ? Number(text) : NaN;
  return value < limit ? value : null;
}
function setHash(changes) {
  const params = hashState();
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === "") params.delete(k); else params.set(k, v);
  }
  const text = params.toString();
  history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
}
function modelPage(row) {
  return DATA.source_url && row[FIELD.source] === "evaluated"
    ? `${DATA.source_url}/leaderboard/models/${row[FIELD.ap_key]}/${row[FIELD.model_key]}.md` : null;
}
function sortButton(th, title, onSort) {
  const button = el("button", title, {type: "button", class: "sort"});
  button.addEventListener("click", onSort);
  th.append(button);
  return th;
}
function apOf(row) { return DATA.aps[row[FIELD.ap_key]] || {name: row[FIELD.ap_key], taxonomy: {}}; }
function apFacts(key) { return DATA.aps[key] || {name: key, taxonomy: {}}; }
function el(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attributes || {})) node.setAttribute(k, v);
  return node;
}
function si(value) {
  if (value === null || value === undefined) return "";
  for (const [t, s] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (value >= t) return (value / t).toPrecision(3) + s;
  return String(value);
}
function fixed(value) { return value === null || value === undefined ? "" : value.toFixed(2); }

// ------------------------------------------------------------------------------------------ rankings
function pText(p) { return p === null || p === undefined ? "" : p < 0.001 ? "<0.001" : p.toFixed(3); }
function rankings() {
  const box = document.getElementById("ranks");
  const groups = new Map();
  for (const table of window.APB_RANKS || []) {
    const key = `${table.dataset}-${table.structure}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(table);
  }
  if (!groups.size) { box.append(el("p", "No ranked table yet: the repository has no records.")); return; }
  for (const [key, tables] of groups) {
    const first = tables[0], section = el("section", null, {class: "ranking", "data-group": key});
    const select = el("select", null, {"aria-label": `table of ${first.dataset}, ${first.structure}`});
    tables.forEach((t, i) => select.append(el("option", t.title, {value: String(i)})));
    const chosen = savedIndex(hashState().get(`rank-${key}`), tables.length);
    if (chosen) select.value = String(chosen);
    const holder = el("div", null, {class: "scroll"}), more = el("button", "", {type: "button", class: "more"});
    let all = false;
    select.addEventListener("change", () => { all = false; setHash({[`rank-${key}`]: select.value === "0" ? "" : select.value}); draw(); });
    more.addEventListener("click", () => { all = !all; draw(); });
    section.append(el("h3", `${first.dataset}, ${STRUCTURES[first.structure] || first.structure}`), select, holder, more);
    box.append(section);
    function draw() {
      const table = tables[Number(select.value)], t = el("table", null, {class: "ranks"}), head = el("tr");
      head.append(...["#", "AP", `mean ${METRIC_LABEL[table.metric] || table.metric} (%)`,
        "cells", "p vs above", "venue", "year"].map((h) => el("th", h, {scope: "col"})));
      const body = el("tbody");
      for (const [ap, rank, mean, covered, of, p] of all ? table.rows : table.rows.slice(0, RANK_ROWS)) {
        const facts = apFacts(ap), tr = el("tr", null, {"data-ap": ap}), name = el("td");
        if (facts.paper) name.append(el("a", facts.name, {href: facts.paper, rel: "noopener"})); else name.textContent = facts.name;
        tr.append(el("td", rank === null ? "–" : rank, {class: "number rank"}), name,
          el("td", mean === null ? "–" : mean.toFixed(2), {class: "number"}), el("td", `${covered}/${of}`, {class: "number"}),
          el("td", pText(p), {class: "number"}), el("td", facts.venue || ""), el("td", facts.year || ""));
        body.append(tr);
      }
      t.append(el("thead"), body);
      t.firstChild.append(head);
      holder.replaceChildren(t);
      more.hidden = table.rows.length <= RANK_ROWS;
      more.textContent = all ? `show the first ${RANK_ROWS}` : `show all ${table.rows.length} rows`;
    }
    draw();
  }
}

// ------------------------------------------------------------------------------------------ leaderboard
function leaderboard() {
  rankings();
  const saved = hashState();
  const state = {sort: DEFAULT_SORT, descending: true, page: 0, search: saved.get("q") || "", filters: {}};
  const savedSort = COLUMNS.findIndex(([title]) => title === saved.get("sort"));  // by name: a column may move
  if (savedSort >= 0) { state.sort = savedSort; state.descending = saved.get("order") !== "asc"; }
  state.page = Math.max(0, (savedIndex(saved.get("page"), Number.MAX_SAFE_INTEGER) || 1) - 1);
  const filterBox = document.getElementById("filters");
  for (const [name, values] of FILTERS) {
    const options = [...new Set(DATA.rows.flatMap(values))].sort();
    if (options.length < 2) continue;
    const select = el("select", null, {"data-filter": name, "aria-label": name});
    select.append(el("option", "all", {value: ""}), ...options.map((v) => el("option", v, {value: v})));
    if (options.includes(saved.get(`f.${name}`))) { select.value = saved.get(`f.${name}`); state.filters[name] = select.value; }
    select.addEventListener("change", () => { state.filters[name] = select.value; state.page = 0; draw(); });
    const label = el("label", name);
    label.append(select);
    filterBox.append(label);
  }
  const search = document.getElementById("search");
  search.value = state.search;
  search.addEventListener("input", (event) => {
    state.search = event.target.value.toLowerCase(); state.page = 0; draw();
  });
  const head = document.querySelector("#leaderboard thead"), headRow = el("tr");
  COLUMNS.forEach(([title], i) => {
    headRow.append(sortButton(el("th", null, {"data-column": String(i), scope: "col"}), title, () => {
      state.descending = state.sort === i ? !state.descending : Boolean(COLUMNS[i][2]);
      state.sort = i; state.page = 0; draw();
    }));
  });
  head.append(headRow);
  document.getElementById("previous").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); draw(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; draw(); });

  function matches(row) {
    for (const [name, values] of FILTERS) {
      const wanted = state.filters[name];
      if (wanted && !values(row).includes(wanted)) return false;
    }
    if (!state.search) return true;
    const ap = apOf(row);
    return [ap.name, ap.venue, row[FIELD.model_key]].some((t) => t && t.toLowerCase().includes(state.search));
  }
  function draw() {
    const [, value, numeric] = COLUMNS[state.sort];
    const rows = DATA.rows.filter(matches).sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === y) return 0;
      if (x === null || x === "" || x === undefined) return 1;  // missing values last, whatever the order
      if (y === null || y === "" || y === undefined) return -1;
      const order = numeric ? x - y : String(x).localeCompare(String(y));
      return state.descending ? -order : order;
    });
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    headRow.querySelectorAll("th").forEach((th, i) => {
      if (i === state.sort) th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
    setHash({q: state.search, sort: state.sort === DEFAULT_SORT && state.descending ? "" : COLUMNS[state.sort][0],
      order: state.sort === DEFAULT_SORT && state.descending ? "" : state.descending ? "desc" : "asc",
      page: state.page ? String(state.page + 1) : "",
      ...Object.fromEntries(FILTERS.map(([name]) => [`f.${name}`, state.filters[name] || ""]))});
    const body = document.querySelector("#leaderboard tbody");
    body.replaceChildren(...rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE).map((row) => {
      const tr = el("tr", null, {"data-model": row[FIELD.model_key], "data-protocol": row[FIELD.protocol]});
      COLUMNS.forEach(([title, get, numeric]) => {
        let text = get(row);
        if (METRIC_TITLES.has(title)) text = fixed(text);
        if (title === "effective MACs" || title === "non-zero params") text = si(text);
        const td = el("td", null, numeric ? {class: "number"} : {});
        if (title === "AP" && apOf(row).paper) {
          td.append(el("a", text, {href: apOf(row).paper, rel: "noopener"}));
        } else if (title === "model key" && modelPage(row)) {
          td.append(el("a", text, {href: modelPage(row)}));
        } else if (title === "flags" && text) {
          td.append(el("span", "⚠ " + text, {class: "flag"}));
        } else td.textContent = text === undefined || text === null ? "" : String(text);
        if (title === "AP") {  // which model, under the name: shown where the model's own columns are off-screen
          td.append(el("span", `${row[FIELD.dataset]} ${row[FIELD.structure_kind]} · ${row[FIELD.architecture]} ` +
            `${row[FIELD.sparsity]}%`, {class: "model", "aria-hidden": "true"}));
        }
        if (title === HEADLINE && row[FIELD.aa_spread] !== null) {
          td.append(el("span", ` ±${row[FIELD.aa_spread].toFixed(2)}`, {class: "spread", title: "half the 95% interval"}));
        }
        if (title === HEADLINE && row[FIELD.flags].length) td.append(el("span", " ⚠", {class: "flag", "aria-hidden": "true"}));
        tr.append(td);
      });
      return tr;
    }));
    document.getElementById("count").textContent = `${rows.length} of ${DATA.rows.length} records`;
    document.getElementById("page").textContent = `page ${state.page + 1} of ${pages}`;
  }
  draw();
}

// ------------------------------------------------------------------------------------------ comparison
function compare() {
  const withCurves = DATA.rows.filter((r) => r[FIELD.curve]);
  const picked = [];
  const select = document.getElementById("models"), search = document.getElementById("model-search");
  const slider = document.getElementById("eps"), note = document.getElementById("picker-note");
  function label(row) { return `${apOf(row).name} · ${row[FIELD.model_key]} · ${row[FIELD.protocol]}`; }
  function valueOf(row) { return `${row[FIELD.model_key]}|${row[FIELD.protocol]}`; }
  function list() {
    const text = search.value.toLowerCase(), found = withCurves.filter((r) => label(r).toLowerCase().includes(text));
    select.replaceChildren(...found.slice(0, PICK_CAP).map((r) => el("option", label(r), {value: valueOf(r)})));
    note.textContent = !withCurves.length
      ? "No model has a security curve yet: curves come from per-sample distances, which evaluated records and " +
        "published records with the original benchmark's distances carry. This site's data has none."
      : found.length > PICK_CAP ? `${found.length} models match; the first ${PICK_CAP} are listed: type to narrow.`
      : `${found.length} of ${withCurves.length} models with curves match.`;
  }
  search.addEventListener("input", list);
  list();
  if (!withCurves.length) {  // nothing to pick: the note says why, in place of an empty picker and plot
    for (const id of ["plot", "eps", "picked-empty", "picked"]) document.getElementById(id).hidden = true;
    for (const selector of [".picker", "label[for=eps]"]) document.querySelector(selector).hidden = true;
    return;
  }
  function curveOf(row, then) {  // a column's curves load once, when a model of it is first picked
    const key = row[FIELD.curve], file = `data/curves/${key.replace("/", "__")}.js`;
    const loaded = () => window.APB_CURVES && window.APB_CURVES[key];
    function use(curves) {
      const curve = curves && curves[row[FIELD.model_key]];
      if (curve) then(curve);
      else note.textContent = `The curve of ${label(row)} could not be loaded (${file}): check the connection and reload the page.`;
    }
    if (loaded()) { use(loaded()); return; }
    const script = el("script", null, {src: file});
    script.addEventListener("load", () => use(loaded()));
    script.addEventListener("error", () => { script.remove(); use(null); });
    document.head.append(script);
  }
  function remember() { setHash({models: picked.map((p) => valueOf(p.row)).join(",")}); }
  // curves are compared within one threat model (norm and ε): the first picked model's protocol sets it
  function threatOf(row) { return DATA.protocols[row[FIELD.protocol]]; }
  function add(value) {
    const [model, protocol] = value.split("|");
    const row = withCurves.find((r) => r[FIELD.model_key] === model && r[FIELD.protocol] === protocol);
    if (!row || picked.some((p) => p.row === row)) return;
    if (picked.length && threatOf(row).threat !== threatOf(picked[0].row).threat) {
      note.textContent = `${label(row)} is under ${threatOf(row).threat}, the picked models under ` +
        `${threatOf(picked[0].row).threat}: curves are compared within one threat model; remove those first.`;
      return;
    }
    curveOf(row, (curve) => { if (!picked.some((p) => p.row === row)) picked.push({row, curve}); remember(); draw(); });
  }
  document.getElementById("add").addEventListener("click", () => { if (select.value) add(select.value); });
  select.addEventListener("dblclick", () => { if (select.value) add(select.value); });
  slider.addEventListener("input", draw);
  let shown = null;  // the threat model on the plot: its grid sets the slider
  function draw() {
    const threat = picked.length ? threatOf(picked[0].row) : Object.values(DATA.protocols)[0];
    if (!threat) return;
    if (threat !== shown) {
      shown = threat;
      slider.max = String(threat.grid.length - 1);
      const at = threat.grid.findIndex(([value]) => Math.abs(value - threat.eps) < 1e-12);
      slider.value = String(at < 0 ? 0 : at);
    }
    const index = Number(slider.value), x = threat.grid.map(([value]) => value);
    document.getElementById("eps-label").textContent = threat.grid[index][1];
    const traces = picked.map(({row, curve}) => ({x, y: curve.map((v) => v / 100), mode: "lines",
      name: `${apOf(row).name} ${row[FIELD.architecture]} ${row[FIELD.sparsity]}% ${row[FIELD.dataset]} ${row[FIELD.structure_kind]} (${row[FIELD.protocol]})`}));
    Plotly.react("plot", traces, {
      margin: {t: 30}, xaxis: {title: {text: threat.axis}, tickvals: threat.ticks.map(([value]) => value),
        ticktext: threat.ticks.map(([, text]) => text), range: [0, x[x.length - 1]]},
      yaxis: {title: {text: "robust accuracy (%)"}, range: [0, 100], ticksuffix: "%"},
      shapes: [{type: "line", x0: x[index], x1: x[index], y0: 0, y1: 100, line: {dash: "dash", color: "#555"}}],
      legend: {orientation: "h", y: -0.2}}, {displaylogo: false, responsive: true});
    document.getElementById("picked-empty").hidden = picked.length > 0;
    document.querySelector("#picked tbody").replaceChildren(...picked.map((item, i) => {
      const tr = el("tr", null, {"data-model": item.row[FIELD.model_key]});
      const remove = el("button", "remove", {type: "button"});
      remove.addEventListener("click", () => { picked.splice(i, 1); remember(); draw(); });
      const samples = item.row[FIELD.source] === "published" ? "published distances" : "all evaluated";
      const name = el("td"), target = modelPage(item.row);
      if (target) name.append(el("a", label(item.row), {href: target})); else name.textContent = label(item.row);
      tr.append(name, el("td", item.row[FIELD.protocol]), el("td", samples),
        el("td", (item.curve[index] / 100).toFixed(2), {class: "number"}), el("td"));
      tr.lastChild.append(remove);
      return tr;
    }));
  }
  draw();
  for (const value of (hashState().get("models") || "").split(",").filter(Boolean)) add(value);
}

// ------------------------------------------------------------------------------------------ analysis
function analysis() {
  const box = document.getElementById("analysis");
  function plot(div, panel) {
    const traces = APB_ANALYSIS.datasets.map((dataset) => {
      if (panel.summary) {  // a large panel comes as box statistics (data/analysis.js stays small at any scale)
        const items = panel.summary.filter(([, d]) => d === dataset), stat = (k) => items.map(([, , s]) => s[k]);
        return {type: "box", name: dataset, x: items.map(([value]) => value), q1: stat("q1"), median: stat("median"),
          q3: stat("q3"), lowerfence: stat("lowerfence"), upperfence: stat("upperfence"), mean: stat("mean")};
      }
      const items = panel.values.filter(([, d]) => d === dataset);
      return {type: "box", name: dataset, boxpoints: "all", jitter: 0.3,
        x: items.flatMap(([value, , numbers]) => numbers.map(() => value)), y: items.flatMap(([, , numbers]) => numbers)};
    });
    Plotly.newPlot(div, traces, {boxmode: "group", margin: {t: 20}, yaxis: {title: {text: "AutoAttack robust accuracy (%)"}}},
      {displaylogo: false, responsive: true});
    div.dataset.drawn = panel.summary ? "boxes" : "points";
  }
  // panels are drawn when they come near the screen, so the page shows at once at any number of APs
  const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      plot(entry.target, APB_ANALYSIS.panels[Number(entry.target.dataset.panel)]);
    }
  }, {rootMargin: "400px"}) : null;
  APB_ANALYSIS.panels.forEach((panel, i) => {
    box.append(el("h2", `${panel.dimension} · ${panel.protocol}`));
    if (panel.summary) {
      const count = panel.summary.reduce((n, [, , s]) => n + s.n, 0);
      box.append(el("p", `${count} cells: boxes only (quartiles, whiskers to 1.5 IQR; the points of so many cells are left out).`, {class: "count"}));
    }
    const div = el("div", null, {class: "panel", "data-panel": String(i)});
    box.append(div);
    if (observer) observer.observe(div); else plot(div, panel);
  });
  for (const table of APB_ANALYSIS.tables) {
    box.append(el("h3", `${table.dimension} · ${table.protocol}`));
    const t = el("table"), head = el("tr");
    head.append(...table.headers.map((h) => el("th", h)));
    t.append(head, ...table.rows.map((r) => { const tr = el("tr"); tr.append(...r.map((c) => el("td", c))); return tr; }));
    const holder = el("div", null, {class: "scroll"});
    holder.append(t);
    box.append(holder);
  }
}

({"index.html": leaderboard, "compare.html": compare, "analysis.html": analysis})[document.body.dataset.page]();
