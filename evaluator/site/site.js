// The site's pages: the leaderboard explorer (index.html), the curve comparison (compare.html) and the
// analysis (analysis.html). Data comes from data/*.js (window.APB, APB_ANALYSIS, APB_CURVES); every value is
// put into the page with textContent, never as HTML.
"use strict";

const FIELD = Object.fromEntries(APB.fields.map((name, i) => [name, i]));
const COLUMNS = [
  ["AP", (r) => apOf(r).name], ["venue", (r) => apOf(r).venue || ""], ["year", (r) => apOf(r).year || ""],
  ["dataset", (r) => r[FIELD.dataset]], ["structure", (r) => r[FIELD.structure_kind]],
  ["architecture", (r) => r[FIELD.architecture]], ["sparsity", (r) => r[FIELD.sparsity], true],
  ["protocol", (r) => r[FIELD.protocol]], ["clean", (r) => r[FIELD.clean], true], ["AA", (r) => r[FIELD.aa], true],
  ["HO-FMN", (r) => r[FIELD.hofmn], true], ["worst case", (r) => r[FIELD.worst], true],
  ["effective MACs", (r) => r[FIELD.macs_effective], true], ["non-zero params", (r) => r[FIELD.params_nonzero], true],
  ["model key", (r) => r[FIELD.model_key]],
];
const FILTERS = [["dataset", (r) => [r[FIELD.dataset]]], ["structure", (r) => [r[FIELD.structure_kind]]],
  ["architecture", (r) => [r[FIELD.architecture]]], ["sparsity", (r) => [String(r[FIELD.sparsity])]],
  ["protocol", (r) => [r[FIELD.protocol]]],
  ...APB.dimensions.map((title) => [title, (r) => apOf(r).taxonomy[title] || []])];
const PAGE_SIZE = 50;

function apOf(row) { return APB.aps[row[FIELD.ap_key]] || {name: row[FIELD.ap_key], taxonomy: {}}; }
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
function epsText(index) {
  const steps = APB.grid_steps_per_255, k = index / steps;
  return index === 0 ? "0" : (Number.isInteger(k) ? k : k.toFixed(2)) + "/255";
}

// ------------------------------------------------------------------------------------------ leaderboard
function leaderboard() {
  const state = {sort: 9, descending: true, page: 0, search: "", filters: {}};
  const filterBox = document.getElementById("filters");
  for (const [name, values] of FILTERS) {
    const options = [...new Set(APB.rows.flatMap(values))].sort();
    if (options.length < 2) continue;
    const select = el("select", null, {"data-filter": name, "aria-label": name});
    select.append(el("option", "all", {value: ""}), ...options.map((v) => el("option", v, {value: v})));
    select.addEventListener("change", () => { state.filters[name] = select.value; state.page = 0; draw(); });
    const label = el("label", name);
    label.append(select);
    filterBox.append(label);
  }
  document.getElementById("search").addEventListener("input", (event) => {
    state.search = event.target.value.toLowerCase(); state.page = 0; draw();
  });
  const head = document.querySelector("#leaderboard thead"), headRow = el("tr");
  COLUMNS.forEach(([title], i) => {
    const th = el("th", title, {"data-column": String(i), scope: "col"});
    th.addEventListener("click", () => {
      state.descending = state.sort === i ? !state.descending : Boolean(COLUMNS[i][2]);
      state.sort = i; state.page = 0; draw();
    });
    headRow.append(th);
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
    const rows = APB.rows.filter(matches).sort((a, b) => {
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
    const body = document.querySelector("#leaderboard tbody");
    body.replaceChildren(...rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE).map((row) => {
      const tr = el("tr", null, {"data-model": row[FIELD.model_key], "data-protocol": row[FIELD.protocol]});
      COLUMNS.forEach(([title, get, numeric]) => {
        let text = get(row);
        if (["clean", "AA", "HO-FMN", "worst case"].includes(title)) text = fixed(text);
        if (title === "effective MACs" || title === "non-zero params") text = si(text);
        const td = el("td", null, numeric ? {class: "number"} : {});
        if (title === "AP" && apOf(row).paper) {
          td.append(el("a", text, {href: apOf(row).paper, rel: "noopener"}));
        } else if (title === "model key" && APB.source_url && row[FIELD.source] === "evaluated") {
          td.append(el("a", text, {href: APB.source_url + "/leaderboard/models/" + text + ".md"}));
        } else td.textContent = text === undefined || text === null ? "" : String(text);
        if (title === "AA" && row[FIELD.flags].length) td.append(el("span", " ⚠", {class: "flag", title: row[FIELD.flags].join(", ")}));
        tr.append(td);
      });
      return tr;
    }));
    document.getElementById("count").textContent = `${rows.length} of ${APB.rows.length} records`;
    document.getElementById("page").textContent = `page ${state.page + 1} of ${pages}`;
  }
  draw();
}

// ------------------------------------------------------------------------------------------ comparison
function compare() {
  const withCurves = APB.rows.filter((r) => r[FIELD.curve]);
  const picked = [];
  const select = document.getElementById("models"), search = document.getElementById("model-search");
  const slider = document.getElementById("eps");
  function label(row) { return `${apOf(row).name} · ${row[FIELD.model_key]} · ${row[FIELD.protocol]}`; }
  function list() {
    const text = search.value.toLowerCase();
    select.replaceChildren(...withCurves.filter((r) => label(r).toLowerCase().includes(text)).slice(0, 500)
      .map((r) => el("option", label(r), {value: `${r[FIELD.model_key]}|${r[FIELD.protocol]}`})));
  }
  search.addEventListener("input", list);
  list();
  function curveOf(row, then) {
    const key = row[FIELD.curve], loaded = window.APB_CURVES && window.APB_CURVES[key];
    if (loaded) { then(loaded[row[FIELD.model_key]]); return; }
    const script = el("script", null, {src: `data/curves/${key.replace("/", "__")}.js`});
    script.addEventListener("load", () => then(window.APB_CURVES[key][row[FIELD.model_key]]));
    document.head.append(script);
  }
  function add(value) {
    const [model, protocol] = value.split("|");
    const row = withCurves.find((r) => r[FIELD.model_key] === model && r[FIELD.protocol] === protocol);
    if (!row || picked.some((p) => p.row === row)) return;
    curveOf(row, (curve) => { picked.push({row, curve}); draw(); });
  }
  document.getElementById("add").addEventListener("click", () => { if (select.value) add(select.value); });
  select.addEventListener("dblclick", () => { if (select.value) add(select.value); });
  slider.addEventListener("input", draw);
  const steps = APB.grid_steps_per_255, x = [...Array(APB.grid_size).keys()].map((i) => i / steps);
  function draw() {
    const index = Number(slider.value);
    document.getElementById("eps-label").textContent = epsText(index);
    const traces = picked.map(({row, curve}) => ({x, y: curve.map((v) => v / 100), mode: "lines",
      name: `${apOf(row).name} ${row[FIELD.architecture]} ${row[FIELD.sparsity]}% ${row[FIELD.dataset]} ${row[FIELD.structure_kind]} (${row[FIELD.protocol]})`}));
    const ticks = [...Array(10).keys()].map((i) => i * 4);
    Plotly.react("plot", traces, {
      margin: {t: 30}, xaxis: {title: {text: "Linf budget ε"}, tickvals: ticks, ticktext: ticks.map((k) => k ? `${k}/255` : "0"), range: [0, x[x.length - 1]]},
      yaxis: {title: {text: "robust accuracy (%)"}, range: [0, 100], ticksuffix: "%"},
      shapes: [{type: "line", x0: index / steps, x1: index / steps, y0: 0, y1: 100, line: {dash: "dash", color: "#555"}}],
      legend: {orientation: "h", y: -0.2}}, {displaylogo: false, responsive: true});
    document.querySelector("#picked tbody").replaceChildren(...picked.map((item, i) => {
      const tr = el("tr", null, {"data-model": item.row[FIELD.model_key]});
      const remove = el("button", "remove", {type: "button"});
      remove.addEventListener("click", () => { picked.splice(i, 1); draw(); });
      const samples = item.row[FIELD.source] === "published" ? "published distances" : "all evaluated";
      tr.append(el("td", label(item.row)), el("td", item.row[FIELD.protocol]), el("td", samples),
        el("td", (item.curve[index] / 100).toFixed(2), {class: "number"}), el("td"));
      tr.lastChild.append(remove);
      return tr;
    }));
  }
  draw();
}

// ------------------------------------------------------------------------------------------ analysis
function analysis() {
  const box = document.getElementById("analysis");
  for (const panel of APB_ANALYSIS.panels) {
    box.append(el("h2", `${panel.dimension} · ${panel.protocol}`));
    const div = el("div", null, {class: "panel"});
    box.append(div);
    const traces = APB_ANALYSIS.datasets.map((dataset) => {
      const items = panel.values.filter(([, d]) => d === dataset);
      return {type: "box", name: dataset, boxpoints: "all", jitter: 0.3,
        x: items.flatMap(([value, , numbers]) => numbers.map(() => value)), y: items.flatMap(([, , numbers]) => numbers)};
    });
    Plotly.newPlot(div, traces, {boxmode: "group", margin: {t: 20}, yaxis: {title: {text: "AutoAttack robust accuracy (%)"}}},
      {displaylogo: false, responsive: true});
  }
  for (const table of APB_ANALYSIS.tables) {
    box.append(el("h3", `${table.dimension} · ${table.protocol}`));
    const t = el("table"), head = el("tr");
    head.append(...table.headers.map((h) => el("th", h)));
    t.append(head, ...table.rows.map((r) => { const tr = el("tr"); tr.append(...r.map((c) => el("td", c))); return tr; }));
    box.append(t);
  }
}

({"index.html": leaderboard, "compare.html": compare, "analysis.html": analysis})[document.body.dataset.page]();
