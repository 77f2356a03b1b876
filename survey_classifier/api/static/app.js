// The results page: plain JavaScript over the JSON API (no build step).
// Every value from the database is inserted with textContent, never as HTML.
"use strict";

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail;
    throw new Error(detail || response.statusText);
  }
  return body;
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function thumb(id, size = 112) {
  return el("img", { src: `/cutouts/${id}/image.png?size=${size}`, alt: `cutout ${id}`, loading: "lazy" });
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// `columns` describes each column of a table answer: {name, unit, ucd, description, format}
function labelColumn(columns) {
  const found = columns.find((c) => c.name.endsWith("_label"));
  return found ? found.name : null;
}

function card(row, caption) {
  const box = el("figure", { class: "card", "data-cutout": row.cutout_id });
  box.style.margin = "0";
  box.appendChild(thumb(row.cutout_id));
  box.appendChild(el("figcaption", { class: "caption", title: row.path || "" }, caption));
  return box;
}

async function loadStages() {
  const target = document.getElementById("stages");
  try {
    const data = await api("/stages");
    target.textContent = data.stages.length
      ? "stages: " + data.stages.map((s) => `${s.stage} v${s.stage_version}${s.model_ref ? " (" + s.model_ref + ")" : ""}`).join(", ")
      : "no results in this database yet";
  } catch (error) {
    target.textContent = `cannot read the stages: ${error.message}`;
  }
}

async function loadLabels() {
  const target = document.getElementById("labels");
  try {
    const data = await api("/labels");
    const total = data.labels.reduce((sum, l) => sum + l.count, 0);
    target.replaceChildren(el("p", { class: "muted" }, `${data.stage} v${data.stage_version} ${data.model_ref}: ${total} cutouts`));
    const most = Math.max(...data.labels.map((l) => l.count), 1);
    for (const l of data.labels) {
      const row = el("div", { class: "bar-row", "data-label": l.label });
      row.appendChild(el("span", {}, l.label));
      const bar = el("div", { class: "bar" });
      bar.style.width = `${(100 * l.count) / most}%`;
      row.appendChild(bar);
      row.appendChild(el("span", {}, String(l.count)));
      target.appendChild(row);
    }
  } catch (error) {
    target.replaceChildren(el("p", { class: "muted" }, error.message));
  }
}

async function loadSom() {
  const grid = document.getElementById("som-grid");
  const info = document.getElementById("som-info");
  let data;
  try {
    data = await api("/som");
  } catch (error) {
    info.textContent = error.message;
    return;
  }
  const n = data.nodes.reduce((sum, node) => sum + node.count, 0);
  info.textContent = `${data.stage} v${data.stage_version} ${data.model_ref}: ${data.width} × ${data.height} nodes, ${n} cutouts placed`;
  grid.style.gridTemplateColumns = `repeat(${data.width}, 56px)`;
  if (data.has_prototypes) {
    grid.classList.add("prototypes");
    grid.style.backgroundImage = `url(${data.prototype_image})`;
  }
  const byNode = new Map(data.nodes.map((node) => [`${node.x},${node.y}`, node]));
  grid.replaceChildren();
  for (let y = 0; y < data.height; y++) {
    for (let x = 0; x < data.width; x++) {
      const node = byNode.get(`${x},${y}`);
      const cell = el("button", { class: "som-cell" + (node ? "" : " empty"), "data-x": x, "data-y": y,
                                  title: node ? `node (${x}, ${y}): ${node.count} cutouts` : `node (${x}, ${y}): empty` });
      if (node) {
        if (!data.has_prototypes) cell.appendChild(thumb(node.best_cutout_id, 56));
        cell.appendChild(el("span", { class: "count" }, String(node.count)));
        cell.addEventListener("click", () => showNode(x, y, cell));
      } else {
        cell.disabled = true;
      }
      grid.appendChild(cell);
    }
  }
}

async function showNode(x, y, cell) {
  document.querySelectorAll(".som-cell.selected").forEach((c) => c.classList.remove("selected"));
  cell.classList.add("selected");
  const title = document.getElementById("node-title");
  const target = document.getElementById("node-cutouts");
  title.textContent = `node (${x}, ${y}): loading…`;
  try {
    const data = await api(`/results?som_x=${x}&som_y=${y}&limit=48`);
    const label = labelColumn(data.columns);
    const plural = data.count === 1 && !data.next_after_id ? "cutout" : "cutouts";
    title.textContent = `node (${x}, ${y}): ${data.count}${data.next_after_id ? "+" : ""} ${plural}`;
    target.replaceChildren(...data.rows.map((row) => card(row, `#${row.cutout_id} ${label ? row[label] || "" : ""}`)));
  } catch (error) {
    title.textContent = `node (${x}, ${y}): ${error.message}`;
  }
}

async function loadAnomalies() {
  const info = document.getElementById("anomaly-info");
  const target = document.getElementById("anomalies");
  try {
    const data = await api("/anomalies?top=24");
    const found = data.columns.find((c) => c.name.endsWith("_score"));
    const score = found ? found.name : null;
    info.textContent = `the ${data.count} highest anomaly scores`;
    target.replaceChildren(...data.rows.map((row) => card(row, `#${row.anomaly_rank} score ${fmt(row[score], 3)}`)));
  } catch (error) {
    info.textContent = error.message;
  }
}

async function coneSearch(event) {
  event.preventDefault();
  const status = document.getElementById("cone-status");
  const table = document.getElementById("cone-results");
  const downloads = document.getElementById("cone-downloads");
  const query = new URLSearchParams({
    ra: document.getElementById("ra").value.trim(),
    dec: document.getElementById("dec").value.trim(),
    radius: document.getElementById("radius").value.trim(),
    limit: "200",
  });
  status.classList.remove("error");
  status.textContent = "searching…";
  try {
    const data = await api(`/results?${query}`);
    const label = labelColumn(data.columns);
    const rows = data.rows.slice().sort((a, b) => a.separation_arcsec - b.separation_arcsec);
    table.tBodies[0].replaceChildren(...rows.map((row) => {
      const tr = el("tr", { "data-cutout": row.cutout_id });
      const image = el("td");
      image.appendChild(thumb(row.cutout_id, 48));
      tr.appendChild(image);
      tr.appendChild(el("td", {}, String(row.cutout_id)));
      tr.appendChild(el("td", {}, fmt(row.ra_deg, 4)));
      tr.appendChild(el("td", {}, fmt(row.dec_deg, 4)));
      tr.appendChild(el("td", {}, fmt(row.separation_arcsec, 1)));
      tr.appendChild(el("td", {}, label ? String(row[label] ?? "–") : "–"));
      return tr;
    }));
    table.hidden = rows.length === 0;
    const plural = data.count === 1 && !data.next_after_id ? "cutout" : "cutouts";
    const radius = /^[0-9.]+$/.test(query.get("radius")) ? `${query.get("radius")}°` : query.get("radius");
    status.textContent = `${data.count}${data.next_after_id ? "+" : ""} ${plural} within ${radius} of (${query.get("ra")}, ${query.get("dec")})`;
    downloads.replaceChildren(...["csv", "votable", "fits"].map((format) => {
      const q = new URLSearchParams(query);
      q.set("format", format);
      return el("a", { href: `/results?${q}` }, format.toUpperCase());
    }));
  } catch (error) {
    table.hidden = true;
    downloads.replaceChildren();
    status.classList.add("error");
    status.textContent = error.message;
  }
}

document.getElementById("cone-form").addEventListener("submit", coneSearch);
loadStages();
loadLabels();
loadSom();
loadAnomalies();
