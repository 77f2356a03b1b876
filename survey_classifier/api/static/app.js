// The results page: plain JavaScript over the JSON API (no build step, nothing fetched from elsewhere).
// Every value from the database is inserted with textContent, never as HTML.
// The view and its filters live in the address (#/results?label=FRII&sort=-anomaly_score), so a view can be shared.
"use strict";

const state = { stages: [], token: sessionStorage.getItem("sc-token") || "", author: localStorage.getItem("sc-author") || "" };

// ---------------------------------------------------------------- helpers
async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.write) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { method: options.method || "GET", headers,
                                       body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail;
    const error = new Error(detail || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  if (text !== null && text !== undefined) node.textContent = text;
  return node;
}

function thumb(id, size = 112, lazy = false) {
  return el("img", { src: `/cutouts/${id}/image.png?size=${size}`, alt: `cutout ${id}`, loading: lazy ? "lazy" : null,
                     width: size, height: size });
}

// The server draws a bounded number of pictures at once and answers 503 (Retry-After) past that; a page of
// thumbnails asks for dozens at once, so a picture of ours that failed is asked for again, up to 4 times.
const IMAGE_RETRIES = 4;
document.addEventListener("error", (event) => {
  const image = event.target;
  if (!(image instanceof HTMLImageElement) || !image.src.includes("/cutouts/")) return;
  const tries = Number(image.dataset.tries || 0);
  if (tries >= IMAGE_RETRIES) return;
  image.dataset.tries = String(tries + 1);
  const url = new URL(image.src);
  url.searchParams.set("try", String(tries + 1));  // a new address, so the browser asks again
  setTimeout(() => { image.src = url.toString(); }, 1000 * (tries + 1));
}, true);

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function fmt(value, digits) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && digits === undefined) return String(value);
  return value.toFixed(digits === undefined ? 4 : digits);
}

// a column's value as the page shows it (using the column's declared format where it has one)
function show(column, value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number" && !Number.isInteger(value)) {
    const match = column && column.format && /\.(\d+)([fg])/.exec(column.format);
    if (match) return match[2] === "f" ? value.toFixed(Number(match[1])) : Number(value.toPrecision(Number(match[1]))).toString();
    return Math.abs(value) >= 1000 || Math.abs(value) < 0.001 ? value.toPrecision(4) : value.toFixed(4);
  }
  return fmt(value);
}

function pad(n, width, digits = 0) {
  const text = n.toFixed(digits);
  const whole = text.split(".")[0];
  return "0".repeat(Math.max(0, width - whole.length)) + text;
}

// sexagesimal RA (hours) and Dec (degrees), rounded without 60-second carries
function sexagesimal(raDeg, decDeg) {
  let raS = Math.round(((raDeg / 15 + 24) % 24) * 3600 * 100) / 100;
  const h = Math.floor(raS / 3600); raS -= h * 3600;
  const m = Math.floor(raS / 60); raS -= m * 60;
  const sign = decDeg < 0 ? "−" : "+";
  let decS = Math.round(Math.abs(decDeg) * 3600 * 10) / 10;
  const d = Math.floor(decS / 3600); decS -= d * 3600;
  const dm = Math.floor(decS / 60); decS -= dm * 60;
  return `${pad(h, 2)}h${pad(m, 2)}m${pad(raS, 2, 2)}s ${sign}${pad(d, 2)}°${pad(dm, 2)}′${pad(decS, 2, 1)}″`;
}

function sourceName(row) {
  return row.catalogue_id ? `${row.catalogue_id}` : `cutout ${row.cutout_id}`;
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// route: "#/results?a=b" -> {view: "results", id: null, params}
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const [view, id] = (path || "results").split("/");
  return { view: view || "results", id: id || null, params: new URLSearchParams(query || "") };
}

function go(view, params = null, id = null) {
  const query = params && params.toString();
  location.hash = `#/${view}${id !== null ? "/" + id : ""}${query ? "?" + query : ""}`;
}

function sourceLink(id, child) {
  const link = el("a", { href: `#/source/${id}`, class: "source-link", "data-cutout": id });
  link.appendChild(child);
  return link;
}

function card(row, caption, size = 112, image = null) {
  const box = el("figure", { class: "card", "data-cutout": row.cutout_id });
  box.appendChild(sourceLink(row.cutout_id, image || thumb(row.cutout_id, size)));
  for (const line of Array.isArray(caption) ? caption : [caption]) box.appendChild(el("figcaption", { class: "caption" }, line));
  return box;
}

function stagesOf(kind) {
  return state.stages.filter((s) => s.kind === kind).map((s) => s.stage);
}

// ---------------------------------------------------------------- token and author
function renderMode() {
  const mode = document.getElementById("mode");
  const canWrite = Boolean(state.token && state.author);
  mode.textContent = canWrite ? `labelling as ${state.author}` : state.token ? "enter your name to label" : "read-only";
  mode.classList.toggle("write", canWrite);
  document.querySelectorAll(".needs-token, #label-save, #neuron-save, #rerank").forEach((node) => { node.disabled = !canWrite; });
}

function useToken(event) {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  state.author = document.getElementById("author").value.trim();
  sessionStorage.setItem("sc-token", state.token);
  localStorage.setItem("sc-author", state.author);
  renderMode();
}

// ---------------------------------------------------------------- stages, classes
async function loadStages() {
  const target = document.getElementById("stages");
  try {
    const data = await api("/stages");
    state.stages = data.stages;
    target.textContent = data.stages.length
      ? "stages: " + data.stages.map((s) => `${s.stage} v${s.stage_version}${s.model_ref ? " (" + s.model_ref + ")" : ""}`).join(", ")
      : "no results in this database yet";
  } catch (error) {
    target.textContent = `cannot read the stages: ${error.message}`;
  }
}

async function loadClasses() {
  try {
    const data = await api("/labels/classes");
    document.getElementById("classes").replaceChildren(...data.classes.map((name) => el("option", { value: name })));
  } catch (error) { /* the list is a convenience: free text still works */ }
}

async function loadLabelCounts() {
  const target = document.getElementById("labels");
  const select = document.getElementById("f-label");
  try {
    const data = await api("/labels");
    const total = data.labels.reduce((sum, l) => sum + l.count, 0);
    target.replaceChildren(el("p", { class: "muted" }, `${data.stage} v${data.stage_version}: ${total} cutouts`));
    const most = Math.max(...data.labels.map((l) => l.count), 1);
    for (const l of data.labels) {
      const row = el("a", { class: "bar-row", "data-label": l.label, href: `#/results?label=${encodeURIComponent(l.label)}` });
      row.appendChild(el("span", {}, l.label));
      const bar = el("div", { class: "bar" });
      bar.style.width = `${(100 * l.count) / most}%`;
      row.appendChild(bar);
      row.appendChild(el("span", {}, String(l.count)));
      target.appendChild(row);
    }
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "any"), ...data.labels.map((l) => el("option", { value: l.label }, l.label)));
    select.value = chosen;
  } catch (error) {
    target.replaceChildren(el("p", { class: "muted" }, error.message));
  }
}

// ---------------------------------------------------------------- results view
const FILTERS = ["stage", "label", "min_probability", "max_probability", "label_class", "interesting", "anomaly_rank_min",
                 "anomaly_rank_max", "som_x", "som_y", "ra", "dec", "radius"];
const DEFAULT_COLUMNS = ["cutout_id", "catalogue_id", "ra_deg", "dec_deg", "separation_arcsec", "*_label", "*_probability",
                         "anomaly_score", "anomaly_rank", "som_node_x", "som_node_y", "som_neuron_label", "label_class", "label_interesting"];
let resultsColumns = [];

function fillFilters(params) {
  const stageSelect = document.getElementById("f-stage");
  const classification = stagesOf("classification");
  stageSelect.replaceChildren(el("option", { value: "" }, "any"), ...classification.map((s) => el("option", { value: s }, s)));
  for (const name of FILTERS) {
    const input = document.querySelector(`#filters [name="${name}"]`);
    if (input) input.value = params.get(name) || "";
  }
}

function filtersFromForm() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const input = document.querySelector(`#filters [name="${name}"]`);
    const value = input ? input.value.trim() : "";
    if (value !== "") params.set(name, value);
  }
  return params;
}

function matches(name, pattern) {
  if (!pattern.includes("*")) return name === pattern;
  const re = new RegExp("^" + pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$");
  return re.test(name);
}

function chosenColumns(params, columns) {
  const names = columns.filter((c) => !(c.ucd || "").includes("meta.file") && c.name !== "sha256").map((c) => c.name);
  const wanted = params.get("cols") ? params.get("cols").split(",") : DEFAULT_COLUMNS;
  const chosen = [];
  for (const pattern of wanted) for (const name of names) if (matches(name, pattern) && !chosen.includes(name)) chosen.push(name);
  return { names, chosen: chosen.length ? chosen : names.slice(0, 6) };
}

async function showResults(params) {
  fillFilters(params);
  const status = document.getElementById("results-status");
  const limit = Number(params.get("limit") || 50);
  const offset = Number(params.get("offset") || 0);
  document.getElementById("page-size").value = String(limit);
  const query = new URLSearchParams();
  for (const name of [...FILTERS, "sort"]) if (params.get(name)) query.set(name, params.get(name));
  query.set("limit", String(limit));
  query.set("offset", String(offset));
  setStatus(status, "loading…");
  let data;
  try {
    data = await api(`/results?${query}`);
  } catch (error) {
    setStatus(status, error.message, true);
    document.querySelector("#results-table tbody").replaceChildren();
    document.getElementById("exports").replaceChildren();
    return;
  }
  resultsColumns = data.columns;
  const byName = new Map(data.columns.map((c) => [c.name, c]));
  const { names, chosen } = chosenColumns(params, data.columns);
  renderColumnPicker(params, names, chosen, byName);
  const sort = params.get("sort") || "";
  const head = el("tr");
  head.appendChild(el("th", {}, ""));
  for (const name of chosen) {
    const column = byName.get(name);
    const th = el("th", { "data-column": name, title: column ? column.description : "" });
    const arrow = sort === name ? " ▲" : sort === `-${name}` ? " ▼" : "";
    const button = el("button", { type: "button", class: "sort" }, name + (column && column.unit ? ` [${column.unit}]` : "") + arrow);
    button.addEventListener("click", () => {
      const next = new URLSearchParams(params);
      next.set("sort", sort === name ? `-${name}` : name);
      next.delete("offset");
      go("results", next);
    });
    th.appendChild(button);
    head.appendChild(th);
  }
  document.querySelector("#results-table thead").replaceChildren(head);
  document.querySelector("#results-table tbody").replaceChildren(...data.rows.map((row) => {
    const tr = el("tr", { "data-cutout": row.cutout_id });
    const image = el("td");
    image.appendChild(sourceLink(row.cutout_id, thumb(row.cutout_id, 48, true)));
    tr.appendChild(image);
    for (const name of chosen) {
      const td = el("td", {}, show(byName.get(name), row[name]));
      if ((name === "cutout_id" || name === "catalogue_id") && row[name] !== null) {
        td.replaceChildren(el("a", { href: `#/source/${row.cutout_id}` }, show(byName.get(name), row[name])));
      }
      tr.appendChild(td);
    }
    tr.addEventListener("click", (event) => { if (event.target.tagName !== "A" && event.target.tagName !== "IMG") go("source", null, row.cutout_id); });
    return tr;
  }));
  const more = data.count === limit;
  setStatus(status, data.count ? `rows ${offset + 1}–${offset + data.count}${more ? " (more on the next page)" : ""}` : "no cutouts match these filters");
  document.getElementById("page-info").textContent = `page ${Math.floor(offset / limit) + 1}`;
  document.getElementById("prev-page").disabled = offset === 0;
  document.getElementById("next-page").disabled = !more;
  // the filtered set, every row of it, with the columns shown
  const exports = document.getElementById("exports");
  exports.replaceChildren(el("span", { class: "muted" }, "export all matching: "), ...(await exportFormats()).map((format) => {
    const q = new URLSearchParams();
    for (const name of [...FILTERS, "sort"]) if (params.get(name)) q.set(name, params.get(name));
    q.set("columns", chosen.join(","));
    q.set("format", format);
    return el("a", { href: `/results?${q}`, class: "export", "data-format": format }, format.toUpperCase());
  }));
}

// the export formats /results offers, read from its OpenAPI description (one list, kept by the service)
let formats = null;
async function exportFormats() {
  if (formats === null) {
    try {
      const schema = await api("/openapi.json");
      const parameter = schema.paths["/results"].get.parameters.find((p) => p.name === "format");
      formats = parameter.schema.enum.filter((name) => name !== "json");
    } catch (error) {
      formats = ["csv", "votable", "fits"];
    }
  }
  return formats;
}

function renderColumnPicker(params, names, chosen, byName) {
  const list = document.getElementById("column-list");
  list.replaceChildren(...names.map((name) => {
    const label = el("label", { title: (byName.get(name) || {}).description || "" });
    const box = el("input", { type: "checkbox", value: name, checked: chosen.includes(name) });
    box.addEventListener("change", () => {
      const picked = [...list.querySelectorAll("input:checked")].map((input) => input.value);
      const next = new URLSearchParams(params);
      next.set("cols", picked.join(","));
      go("results", next);
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" " + name));
    return label;
  }));
}

function page(step) {
  const { params } = route();
  const limit = Number(params.get("limit") || 50);
  const offset = Math.max(0, Number(params.get("offset") || 0) + step * limit);
  params.set("offset", String(offset));
  go("results", params);
}

// ---------------------------------------------------------------- one source
let currentSource = null;

function imageUrl(id) {
  const scale = document.getElementById("img-scale").value;
  const softening = document.getElementById("img-softening").value;
  const cmap = document.getElementById("img-cmap").value;
  return `/cutouts/${id}/image.png?size=360&scale=${scale}&softening=${softening}&cmap=${cmap}`;
}

function refreshImage() {
  if (currentSource === null) return;
  document.getElementById("img-softening-value").textContent = document.getElementById("img-softening").value;
  const image = document.getElementById("source-image");
  image.alt = `cutout ${currentSource}`;
  image.src = imageUrl(currentSource);
}

function keyValueTable(rows) {
  const table = el("table", { class: "kv" });
  for (const [key, value, title] of rows) {
    const tr = el("tr", { title: title || "" });
    tr.appendChild(el("th", {}, key));
    tr.appendChild(el("td", {}, value));
    table.appendChild(tr);
  }
  return table;
}

async function showSource(id) {
  currentSource = Number(id);
  const title = document.getElementById("source-title");
  title.textContent = `cutout ${id}: loading…`;
  let data;
  try {
    data = await api(`/cutouts/${id}`);
  } catch (error) {
    title.textContent = error.message;
    return;
  }
  const row = data.cutout;
  title.textContent = row.catalogue_id ? `${row.catalogue_id} (cutout ${row.cutout_id})` : `cutout ${row.cutout_id}`;
  document.getElementById("source-position").textContent = row.ra_deg === null ? "no position" :
    `RA ${fmt(row.ra_deg, 5)}°, Dec ${fmt(row.dec_deg, 5)}° · ${sexagesimal(row.ra_deg, row.dec_deg)} (ICRS)`;
  refreshImage();
  const fits = document.getElementById("fits-link");
  fits.href = `/cutouts/${id}/fits`;
  fits.setAttribute("download", `${row.catalogue_id || "cutout-" + id}.fits`);
  renderStages(row);
  renderErrors(data.errors || []);
  renderAnomaly(row);
  renderSourceSom(row);
  loadNeighbours(id);
  loadSourceLabel(id);
}

// the cutout's own columns and what the input catalogue said of the source
const CUTOUT_KEYS = new Set(["cutout_id", "catalogue_id", "ra_deg", "dec_deg", "file_name", "fits_url", "sha256", "anomaly_rank", "separation_arcsec"]);

function renderCatalogue(row, target) {
  const stagePrefixes = state.stages.map((s) => `${s.stage}_`);
  const keys = Object.keys(row).filter((k) => !CUTOUT_KEYS.has(k) && !k.startsWith("label_") && row[k] !== null &&
                                              !stagePrefixes.some((prefix) => k.startsWith(prefix)));
  if (!keys.length) return;
  const box = el("div", { class: "stage-box", "data-stage": "catalogue" });
  box.appendChild(el("h4", {}, "the cutout and its catalogue row"));
  box.appendChild(keyValueTable(keys.map((k) => [k, show(null, row[k])])));
  target.appendChild(box);
}

function renderStages(row) {
  const target = document.getElementById("source-stages");
  target.replaceChildren();
  renderCatalogue(row, target);
  for (const s of state.stages) {
    const prefix = `${s.stage}_`;
    const keys = Object.keys(row).filter((k) => k.startsWith(prefix) && row[k] !== null && !/_pct$/.test(k) &&
                                                !["run_id", "stage_version", "model_ref", "model_sha256", "embedding_dtype"].some((x) => k === prefix + x));
    if (!keys.length || s.kind === "anomaly") continue;
    const box = el("div", { class: "stage-box", "data-stage": s.stage });
    box.appendChild(el("h4", {}, `${s.stage} · version ${s.stage_version}${s.model_ref ? " · model " + s.model_ref : ""}`));
    box.appendChild(keyValueTable(keys.slice(0, 24).map((k) => {
      const column = resultsColumns.find((c) => c.name === k);
      return [k.slice(prefix.length), show(column, row[k]), column ? column.description : ""];
    })));
    target.appendChild(box);
  }
}

function renderErrors(errors) {
  const target = document.getElementById("source-stages");
  for (const error of errors) {
    const box = el("div", { class: "stage-box failed", "data-stage": error.stage });
    box.appendChild(el("h4", {}, `${error.stage} · version ${error.stage_version}${error.model_ref ? " · model " + error.model_ref : ""}: failed`));
    box.appendChild(el("p", { class: "status error" }, `${error.error_type}${error.hdu !== null ? ` (HDU ${error.hdu})` : ""}: ${error.message}`));
    target.appendChild(box);
  }
}

function renderAnomaly(row) {
  const target = document.getElementById("source-anomaly");
  target.replaceChildren();
  for (const stage of stagesOf("anomaly")) {
    const s = state.stages.find((x) => x.stage === stage);
    const score = row[`${stage}_score`];
    if (score === undefined || score === null) continue;
    const box = el("div", { class: "stage-box", "data-stage": stage });
    const rank = row[`${stage}_rank`];
    box.appendChild(el("h4", {}, `${stage} · version ${s.stage_version}${s.model_ref ? " · model " + s.model_ref : ""}`));
    box.appendChild(el("p", { class: "score" }, `score ${fmt(score, 3)}${rank ? ` · rank ${rank}` : ""}` +
                                                 (row[`${stage}_percentile`] !== undefined && row[`${stage}_percentile`] !== null ? ` · percentile ${fmt(row[`${stage}_percentile`], 1)}` : "")));
    const table = el("table", { class: "components" });
    const head = el("tr");
    for (const name of ["component", "value", "percentile", ""]) head.appendChild(el("th", {}, name));
    table.appendChild(head);
    const skip = new Set(["score", "rank", "percentile", "partial", "run_id", "stage_version", "model_ref", "model_sha256"]);
    const parts = Object.keys(row).filter((k) => k.startsWith(`${stage}_`) && !k.endsWith("_pct") && !skip.has(k.slice(stage.length + 1)));
    for (const key of parts) {
      const part = key.slice(stage.length + 1);
      const pct = row[`${key}_pct`];
      const tr = el("tr", { "data-component": part });
      tr.appendChild(el("td", {}, part));
      tr.appendChild(el("td", {}, fmt(row[key], 3)));
      tr.appendChild(el("td", {}, pct === undefined || pct === null ? "–" : `${fmt(100 * pct, 1)} %`));
      const barCell = el("td", { class: "bar-cell" });
      if (pct !== undefined && pct !== null) {
        const bar = el("div", { class: "bar" });
        bar.style.width = `${Math.max(1, 100 * pct)}%`;
        barCell.appendChild(bar);
      }
      tr.appendChild(barCell);
      table.appendChild(tr);
    }
    if (parts.length) box.appendChild(table);
    target.appendChild(box);
  }
  if (!target.children.length) target.appendChild(el("p", { class: "muted" }, "no anomaly score for this source"));
}

function renderSourceSom(row) {
  const target = document.getElementById("source-som");
  target.replaceChildren();
  for (const stage of stagesOf("som")) {
    const x = row[`${stage}_node_x`], y = row[`${stage}_node_y`];
    if (x === undefined || x === null) continue;
    const s = state.stages.find((v) => v.stage === stage);
    const box = el("div", { class: "stage-box", "data-stage": stage });
    box.appendChild(el("h4", {}, `${stage} · version ${s.stage_version} · map ${s.model_ref}`));
    const pair = el("div", { class: "frame-pair" });
    const member = el("figure");
    member.appendChild(el("img", { id: "source-in-frame", src: `/cutouts/${row.cutout_id}/som.png?size=160&stage=${stage}`, alt: "the source in the neuron's frame", width: 160, height: 160 }));
    member.appendChild(el("figcaption", {}, `this source, ${row[`${stage}_flip`] ? "mirrored and " : ""}rotated ${fmt(row[`${stage}_angle_deg`], 1)}°`));
    const neuron = el("figure");
    neuron.appendChild(el("img", { id: "neuron-prototype", src: `/som/nodes/${x}/${y}/prototype.png?size=160&stage=${stage}`, alt: `neuron (${x}, ${y})`, width: 160, height: 160 }));
    neuron.appendChild(el("figcaption", {}, `neuron (${x}, ${y})`));
    for (const figure of [member, neuron]) {
      figure.querySelector("img").addEventListener("error", () => figure.classList.add("missing"), { once: true });
    }
    pair.appendChild(member);
    pair.appendChild(neuron);
    box.appendChild(pair);
    const rows = [["node", `(${x}, ${y})`], ["distance", fmt(row[`${stage}_distance`], 4)]];
    if (row[`${stage}_neuron_label`]) {
      const reliability = row[`${stage}_neuron_label_reliability`];
      rows.push(["neuron label", `${row[`${stage}_neuron_label`]}${reliability !== null && reliability !== undefined ? ` (reliability ${fmt(reliability, 2)})` : ""}`]);
    }
    box.appendChild(keyValueTable(rows));
    box.appendChild(el("a", { href: `#/som?x=${x}&y=${y}` }, "this neuron on the map and its other sources →"));
    target.appendChild(box);
  }
  if (!target.children.length) target.appendChild(el("p", { class: "muted" }, "not placed on a SOM"));
}

async function loadNeighbours(id) {
  const info = document.getElementById("neighbours-info");
  const target = document.getElementById("neighbours");
  target.replaceChildren();
  try {
    const data = await api(`/cutouts/${id}/neighbours?k=8`);
    info.textContent = `${data.stage} v${data.stage_version} ${data.model_ref}, cosine distance`;
    target.replaceChildren(...data.neighbours.map((n) => card(n, [n.catalogue_id || `cutout ${n.cutout_id}`, `${n.label || ""} d=${fmt(n.distance, 3)}`], 96)));
  } catch (error) {
    info.textContent = error.message;
  }
}

async function loadSourceLabel(id) {
  const history = document.getElementById("label-history");
  setStatus(document.getElementById("label-status"), "");
  try {
    const data = await api(`/cutouts/${id}/labels`);
    const current = data.current;
    document.getElementById("label-class").value = current && current.label ? current.label : "";
    document.getElementById("label-note").value = current && current.note ? current.note : "";
    const interest = current ? current.interesting : null;
    document.getElementById(interest === true ? "label-interesting" : interest === false ? "label-not-interesting" : "label-no-interest").checked = true;
    history.replaceChildren(...data.history.map((h, i) => el("p", { class: i === 0 ? "current" : "muted" },
      `${i === 0 ? "current: " : ""}${h.label || "no class"}${h.interesting === true ? ", interesting" : h.interesting === false ? ", not interesting" : ""}` +
      `${h.note ? " — " + h.note : ""} (${h.author}, ${h.created_at.slice(0, 16).replace("T", " ")} UTC)`)));
  } catch (error) {
    history.replaceChildren(el("p", { class: "muted" }, error.message));
  }
}

async function saveSourceLabel(event) {
  event.preventDefault();
  const status = document.getElementById("label-status");
  const interest = document.querySelector('#label-form input[name="interest"]:checked').value;
  const body = {
    label: document.getElementById("label-class").value.trim() || null,
    interesting: interest === "" ? null : interest === "true",
    note: document.getElementById("label-note").value.trim() || null,
    author: state.author,
  };
  if (body.label === null && body.interesting === null && body.note === null) {
    setStatus(status, "give a class, say interesting or not, or write a note", true);
    return;
  }
  setStatus(status, "saving…");
  try {
    await api(`/cutouts/${currentSource}/labels`, { method: "POST", body, write: true });
  } catch (error) {
    setStatus(status, `not saved: ${error.message}`, true);
    return;
  }
  await loadSourceLabel(currentSource);
  setStatus(status, body.interesting === null ? "saved" : "saved; re-ranking the anomalies…");
  loadClasses();
  if (body.interesting !== null) {
    try {
      const fit = await api("/anomalies/rerank", { method: "POST", body: { author: state.author }, write: true });
      await loadStages();
      setStatus(status, `saved; anomalies re-ranked with ${plural(fit.n_labels, "label")}`);
      const link = el("a", { href: "#/anomalies?stage=reranked", id: "see-reranked" }, " see the re-ranked list →");
      status.appendChild(link);
    } catch (error) {
      setStatus(status, `saved; not re-ranked: ${error.message}`, true);
    }
  }
}

// ---------------------------------------------------------------- anomalies
async function showAnomalies(params) {
  const select = document.getElementById("anomaly-stage");
  const stages = stagesOf("anomaly");
  const names = { reranked: "re-ranked by your labels" };
  select.replaceChildren(...stages.map((s) => el("option", { value: s }, names[s] || `${s} (unsupervised)`)));
  const stage = params.get("stage") || (stages.includes("reranked") ? "reranked" : stages[0] || "");
  select.value = stage;
  document.getElementById("anomaly-unlabelled").checked = params.get("unlabelled") === "true";
  document.getElementById("anomaly-top").value = params.get("top") || "48";
  const info = document.getElementById("anomaly-info");
  const target = document.getElementById("anomalies");
  const query = new URLSearchParams({ top: document.getElementById("anomaly-top").value });
  if (stage) query.set("stage", stage);
  if (params.get("unlabelled") === "true") query.set("unlabelled", "true");
  try {
    const [data, fits] = await Promise.all([api(`/anomalies?${query}`), api("/anomalies/rerank?limit=1")]);
    const score = `${stage}_score`;
    let text = `the ${data.count} highest scores of ${stage}`;
    if (fits.fits.length) {
      const fit = fits.fits[0];
      text += ` · last re-ranking: ${plural(fit.n_labels, "label")}, ${fit.created_at.slice(0, 16).replace("T", " ")} UTC`;
      if (fits.labels_since_last_fit) text += `, ${plural(fits.labels_since_last_fit, "label")} since`;
    }
    info.textContent = text;
    target.replaceChildren(...data.rows.map((row) => {
      const tag = row.label_interesting === true ? " ★" : row.label_interesting === false ? " ✗" : "";
      const box = card(row, [`#${row.anomaly_rank} ${sourceName(row)}${tag}`, `score ${fmt(row[score], 3)}${row.label_class ? " · " + row.label_class : ""}`]);
      if (row.label_interesting !== null && row.label_interesting !== undefined) box.classList.add(row.label_interesting ? "interesting" : "boring");
      return box;
    }));
  } catch (error) {
    info.textContent = error.message;
    target.replaceChildren();
  }
}

function anomalyParams() {
  const params = new URLSearchParams();
  params.set("stage", document.getElementById("anomaly-stage").value);
  if (document.getElementById("anomaly-unlabelled").checked) params.set("unlabelled", "true");
  params.set("top", document.getElementById("anomaly-top").value);
  return params;
}

async function rerankNow() {
  const info = document.getElementById("anomaly-info");
  info.textContent = "re-ranking…";
  try {
    await api("/anomalies/rerank", { method: "POST", body: { author: state.author }, write: true });
    const params = anomalyParams();
    params.set("stage", "reranked");
    await loadStages();
    go("anomalies", params);
    showAnomalies(params);
  } catch (error) {
    info.textContent = `not re-ranked: ${error.message}`;
  }
}

// ---------------------------------------------------------------- SOM
let som = null;

async function showSom(params) {
  const map = document.getElementById("som-map");
  const info = document.getElementById("som-info");
  try {
    som = await api("/som");
  } catch (error) {
    info.textContent = error.message;
    return;
  }
  const placed = som.nodes.reduce((sum, node) => sum + node.count, 0);
  info.textContent = `${som.stage} v${som.stage_version}, map ${som.model_ref}${som.layout ? ", " + som.layout : ""}: ` +
    `${som.width} × ${som.height} neurons, ${plural(placed, "source")} placed, ${plural(som.labelled_nodes.length, "neuron")} labelled`;
  const byNode = new Map(som.nodes.map((node) => [`${node.x},${node.y}`, node]));
  const neurons = som.neurons || [];
  if (!neurons.length) {
    for (let y = 0; y < som.height; y++) for (let x = 0; x < som.width; x++) neurons.push({ x, y, px: x, py: y });
  }
  const cell = 64, gap = 3;
  const hex = som.layout === "hexagonal";
  map.classList.toggle("hexagonal", hex);
  map.style.width = `${(Math.max(...neurons.map((n) => n.px)) + 1) * (cell + gap)}px`;
  map.style.height = `${(Math.max(...neurons.map((n) => n.py)) + 1) * (cell + gap)}px`;
  map.replaceChildren(...neurons.map((n) => {
    const node = byNode.get(`${n.x},${n.y}`);
    const title = `neuron (${n.x}, ${n.y}): ${node ? node.count : 0} sources${node && node.label ? ", labelled " + node.label : ""}`;
    const button = el("button", { type: "button", class: "som-cell" + (node ? "" : " empty"), "data-x": n.x, "data-y": n.y,
                                  title, "data-title": title });
    button.style.left = `${n.px * (cell + gap)}px`;
    button.style.top = `${n.py * (cell + gap)}px`;
    if (som.has_neuron_images) {
      button.appendChild(el("img", { src: `/som/nodes/${n.x}/${n.y}/prototype.png?size=${cell}&stage=${som.stage}`, alt: "", width: cell, height: cell }));
    } else if (node) {
      button.appendChild(thumb(node.best_cutout_id, cell));
    }
    button.appendChild(el("span", { class: "overlay", "aria-hidden": "true" }));
    button.appendChild(el("span", { class: "count" }, String(node ? node.count : 0)));
    if (node && node.label) button.appendChild(el("span", { class: "neuron-label" }, node.label));
    button.appendChild(el("span", { class: "class-badge" }));
    button.addEventListener("click", () => {
      const next = new URLSearchParams({ x: n.x, y: n.y });
      const overlay = document.getElementById("som-overlay").value;
      if (overlay) next.set("overlay", overlay);
      go("som", next);
    });
    return button;
  }));
  const select = document.getElementById("som-overlay");
  select.querySelector('option[value="class"]').disabled = !som.neuron_classes;
  select.querySelector('option[value="umatrix"]').disabled = !som.neurons;
  const wanted = params.get("overlay") || "";
  select.value = [...select.options].some((o) => o.value === wanted && !o.disabled) ? wanted : "";
  showOverlay(select.value, wanted);
  if (params.get("x") !== null && params.get("y") !== null) showNode(Number(params.get("x")), Number(params.get("y")));
}

// ---- what the map itself says, laid over it: each neuron's class and purity, or the U-matrix
const PURITY_FLOOR = 0.5;  // a neuron no purer than a coin toss between two classes is drawn faintest

function neuronAt(x, y) {
  return (som.neurons || []).find((n) => n.x === x && n.y === y) || null;
}

function percent(fraction) {
  return `${Math.round(100 * fraction)} %`;
}

function classText(neuron) {
  if (!neuron || !neuron.neuron_class) return "no class";
  const counts = Object.entries(neuron.class_counts).map(([name, n]) => `${name} ${n}`).join(", ");
  if (neuron.purity === null) return `the map's class ${neuron.neuron_class}, from its neighbours (no labelled sources of its own)`;
  return `the map's class ${neuron.neuron_class}${neuron.class_from_neighbours ? " (a tie, broken by its neighbours)" : ""}, ` +
    `purity ${percent(neuron.purity)} (${counts})`;
}

function classAlpha(neuron) {
  const purity = neuron.purity === null ? PURITY_FLOOR : neuron.purity;
  return 0.12 + 0.5 * Math.min(1, Math.max(0, (purity - PURITY_FLOOR) / (1 - PURITY_FLOOR)));
}

function rgba(hex, alpha) {
  const value = parseInt(hex.slice(1), 16);
  return `rgba(${value >> 16}, ${(value >> 8) & 255}, ${value & 255}, ${alpha.toFixed(3)})`;
}

// U-matrix shade: light where a neuron is like its neighbours, dark at the borders between groups of neurons
function uShade(t) {
  const level = Math.round(245 - 215 * t);
  return `rgba(${level}, ${level}, ${Math.min(255, level + 12)}, 0.82)`;
}

function uRange() {
  const values = som.neurons.map((n) => n.u_distance);
  return [Math.min(...values), Math.max(...values)];
}

function showOverlay(kind, wanted = kind) {
  const map = document.getElementById("som-map");
  map.dataset.overlay = kind;
  const [low, high] = kind === "umatrix" ? uRange() : [0, 1];
  for (const button of map.querySelectorAll(".som-cell")) {
    const x = Number(button.dataset.x), y = Number(button.dataset.y);
    const neuron = neuronAt(x, y);
    const node = som.nodes.find((n) => n.x === x && n.y === y);
    const shade = button.querySelector(".overlay");
    const badge = button.querySelector(".class-badge");
    let title = button.dataset.title;
    shade.style.background = "";
    badge.textContent = "";
    badge.style.background = "";
    button.classList.remove("differs");
    for (const key of ["neuronClass", "purity", "uDistance"]) delete button.dataset[key];
    if (kind === "class" && neuron && neuron.neuron_class) {
      const colour = som.neuron_classes.classes.find((c) => c.name === neuron.neuron_class).colour;
      shade.style.background = rgba(colour, classAlpha(neuron));
      badge.style.background = colour;
      const mark = neuron.class_from_neighbours ? " ·" : "";
      badge.textContent = neuron.purity === null ? `${neuron.neuron_class}${mark}` : `${neuron.neuron_class} ${Math.round(100 * neuron.purity)}%${mark}`;
      button.dataset.neuronClass = neuron.neuron_class;
      if (neuron.purity !== null) button.dataset.purity = String(neuron.purity);
      title += `; ${classText(neuron)}`;
      if (node && node.label && node.label !== neuron.neuron_class) {
        button.classList.add("differs");
        title += `; your label ${node.label} differs from the map's class`;
      }
    } else if (kind === "umatrix" && neuron) {
      shade.style.background = uShade(high > low ? (neuron.u_distance - low) / (high - low) : 0);
      button.dataset.uDistance = String(neuron.u_distance);
      title += `; U-matrix ${neuron.u_distance.toFixed(3)} (mean distance to its neighbours)`;
    }
    button.title = title;
  }
  renderLegend(kind, wanted, low, high);
}

function renderLegend(kind, wanted, low, high) {
  const legend = document.getElementById("som-legend");
  legend.replaceChildren();
  if (wanted === "class" && !som.neuron_classes) {
    legend.appendChild(el("span", { class: "muted" }, som.neuron_classes_note));
    return;
  }
  if (kind === "class") {
    for (const c of som.neuron_classes.classes) {
      const item = el("span", { class: "legend-item", "data-class": c.name });
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = c.colour;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(`${c.name}: ${plural(c.neurons, "neuron")}`));
      legend.appendChild(item);
    }
    legend.appendChild(el("span", { class: "muted" },
      `stronger colour: purer neuron (${percent(PURITY_FLOOR)} faintest, 100 % strongest); ` +
      `“·”: class from its neighbours · ${som.neuron_classes_note}`));
  } else if (kind === "umatrix") {
    legend.appendChild(el("span", { class: "muted" }, "mean distance to neighbouring neurons:"));
    legend.appendChild(el("span", { class: "legend-value" }, low.toFixed(2)));
    const bar = el("span", { class: "gradient", role: "img", "aria-label": `from ${low.toFixed(2)} (light, like its neighbours) to ${high.toFixed(2)} (dark, a border between groups)` });
    bar.style.background = `linear-gradient(to right, ${uShade(0)}, ${uShade(0.5)}, ${uShade(1)})`;
    legend.appendChild(bar);
    legend.appendChild(el("span", { class: "legend-value" }, high.toFixed(2)));
    legend.appendChild(el("span", { class: "muted" }, "light: like its neighbours; dark: a border between groups of neurons"));
  }
}

function chooseOverlay() {
  const kind = document.getElementById("som-overlay").value;
  const { params } = route();
  if (kind) params.set("overlay", kind); else params.delete("overlay");
  const query = params.toString();
  history.replaceState(null, "", `#/som${query ? "?" + query : ""}`);  // no hashchange: the map stays as drawn
  showOverlay(kind);
}

async function showNode(x, y) {
  document.querySelectorAll(".som-cell.selected").forEach((c) => c.classList.remove("selected"));
  const cell = document.querySelector(`.som-cell[data-x="${x}"][data-y="${y}"]`);
  if (cell) cell.classList.add("selected");
  const title = document.getElementById("node-title");
  const head = document.getElementById("node-head");
  const target = document.getElementById("node-cutouts");
  const form = document.getElementById("neuron-form");
  form.hidden = false;
  form.dataset.x = x;
  form.dataset.y = y;
  setStatus(document.getElementById("neuron-status"), "");
  title.textContent = `neuron (${x}, ${y}): loading…`;
  const node = som.nodes.find((n) => n.x === x && n.y === y);
  head.replaceChildren();
  if (som.has_neuron_images) {
    head.appendChild(el("img", { src: `/som/nodes/${x}/${y}/prototype.png?size=160&stage=${som.stage}`, alt: `prototype of neuron (${x}, ${y})`, width: 160, height: 160, class: "prototype" }));
  }
  const about = el("div", { class: "node-about" });
  about.appendChild(el("p", { id: "node-label" }, node && node.label ? `labelled ${node.label}` : "not labelled"));
  const neuron = neuronAt(x, y);
  if (neuron && neuron.neuron_class) about.appendChild(el("p", { id: "node-class" }, classText(neuron)));
  if (neuron) about.appendChild(el("p", { id: "node-u", class: "muted" }, `U-matrix ${neuron.u_distance.toFixed(3)} (mean distance to its neighbours)`));
  head.appendChild(about);
  document.getElementById("neuron-class").value = node && node.label ? node.label : "";
  try {
    const sort = `${som.stage}_distance`;
    const data = await api(`/results?som_x=${x}&som_y=${y}&som_stage=${som.stage}&sort=${sort}&limit=60`);
    const count = node ? node.count : data.count;
    title.textContent = `neuron (${x}, ${y}): ${count} ${count === 1 ? "source" : "sources"}` +
      (som.has_neuron_images ? ", each turned into the neuron's frame, closest first" : "");
    target.replaceChildren(...data.rows.map((row) => {
      const image = som.has_neuron_images
        ? el("img", { src: `/cutouts/${row.cutout_id}/som.png?size=96&stage=${som.stage}`, alt: `cutout ${row.cutout_id} in the neuron's frame`, width: 96, height: 96 })
        : thumb(row.cutout_id, 96);
      const label = Object.keys(row).find((k) => k.endsWith("_label") && !k.startsWith(som.stage) && row[k]);
      return card(row, [sourceName(row), `${label ? row[label] + " " : ""}d=${fmt(row[sort], 2)}`], 96, image);
    }));
  } catch (error) {
    title.textContent = `neuron (${x}, ${y}): ${error.message}`;
  }
}

async function saveNeuronLabel(event) {
  event.preventDefault();
  const form = document.getElementById("neuron-form");
  const status = document.getElementById("neuron-status");
  const x = Number(form.dataset.x), y = Number(form.dataset.y);
  const label = document.getElementById("neuron-class").value.trim();
  if (!label) { setStatus(status, "give the neuron a class", true); return; }
  setStatus(status, "saving…");
  try {
    await api(`/som/nodes/${x}/${y}/labels?stage=${som.stage}`, { method: "POST", write: true,
      body: { label, note: document.getElementById("neuron-note").value.trim() || null, author: state.author } });
  } catch (error) {
    setStatus(status, `not saved: ${error.message}`, true);
    return;
  }
  const overlay = document.getElementById("som-overlay").value;
  await showSom(new URLSearchParams({ x, y, ...(overlay ? { overlay } : {}) }));
  setStatus(status, `neuron (${x}, ${y}) labelled ${label}`);
}

// ---------------------------------------------------------------- routing
async function render() {
  const { view, id, params } = route();
  const known = ["results", "source", "anomalies", "som"];
  const shown = known.includes(view) ? view : "results";
  for (const name of known) document.getElementById(`view-${name}`).hidden = name !== shown;
  document.querySelectorAll("#views a[data-view]").forEach((a) => a.classList.toggle("active", a.dataset.view === shown));
  if (!state.stages.length) await loadStages();
  if (shown === "source" && id !== null) await showSource(id);
  else if (shown === "anomalies") await showAnomalies(params);
  else if (shown === "som") await showSom(params);
  else await showResults(params);
}

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = filtersFromForm();
  const { params: old } = route();
  for (const keep of ["cols", "sort", "limit"]) if (old.get(keep)) params.set(keep, old.get(keep));
  go("results", params);
});
document.getElementById("clear").addEventListener("click", () => go("results"));
document.getElementById("prev-page").addEventListener("click", () => page(-1));
document.getElementById("next-page").addEventListener("click", () => page(1));
document.getElementById("page-size").addEventListener("change", (event) => {
  const { params } = route();
  params.set("limit", event.target.value);
  params.delete("offset");
  go("results", params);
});
for (const id of ["img-scale", "img-softening", "img-cmap"]) document.getElementById(id).addEventListener("change", refreshImage);
document.getElementById("img-softening").addEventListener("input", () => {
  document.getElementById("img-softening-value").textContent = document.getElementById("img-softening").value;
});
document.getElementById("label-form").addEventListener("submit", saveSourceLabel);
document.getElementById("neuron-form").addEventListener("submit", saveNeuronLabel);
document.getElementById("som-overlay").addEventListener("change", chooseOverlay);
document.getElementById("som-overlay-form").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("anomaly-form").addEventListener("change", () => go("anomalies", anomalyParams()));
document.getElementById("rerank").addEventListener("click", rerankNow);
document.getElementById("token-form").addEventListener("submit", useToken);
document.getElementById("author").value = state.author;
document.getElementById("token").value = state.token;
window.addEventListener("hashchange", render);
renderMode();
loadClasses();
loadLabelCounts();
render();
