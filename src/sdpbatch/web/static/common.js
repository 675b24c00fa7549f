// Helpers shared by the pages: DOM building (text only, never HTML), the JSON API and events.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

export function badge(status) {
  const text = String(status ?? "-");
  return el("span", { class: `status status-${text.toLowerCase()}`, text });
}

export function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "-";
}

export function number(value, digits = 4) {
  return value === null || value === undefined ? "-" : Number(value).toPrecision(digits);
}

// An angle given in degrees, in arcseconds below 2 arcmin, else in arcminutes below 2 degrees.
export function angle(degrees) {
  if (degrees === null || degrees === undefined) return "-";
  const a = Math.abs(degrees);
  if (a < 2 / 60) return `${(degrees * 3600).toPrecision(3)}″`;
  if (a < 2) return `${(degrees * 60).toPrecision(3)}′`;
  return `${degrees.toPrecision(3)}°`;
}

export function table(headers, rows, attrs = {}) {
  const head = el("tr", {}, headers.map((h) => el("th", { class: h.endsWith(" ") ? "num" : null, text: h.trim() })));
  return el("table", attrs, el("thead", {}, head), el("tbody", {}, rows));
}

export function blockLink(pbId) {
  return el("a", { href: `/blocks/${encodeURIComponent(pbId)}`, text: pbId });
}

export function pathPart(index) {
  return decodeURIComponent(location.pathname.split("/")[index] || "");
}

export function connection(state, text) {
  const node = document.getElementById("connection");
  node.className = `connection ${state}`;
  node.textContent = text;
}

// An EventSource that reports its state in the header; `onEvent(data)` per named event.
export function subscribe(url, name, onEvent) {
  const source = new EventSource(url);
  source.addEventListener(name, (event) => onEvent(JSON.parse(event.data), event));
  source.addEventListener("open", () => connection("live", "live"));
  source.addEventListener("error", () => connection("lost", "reconnecting…"));
  return source;
}

export function showError(container, error) {
  container.replaceChildren(el("p", { class: "reason", text: String(error.message || error) }));
}

export function section(title, ...content) {
  return el("section", { class: "card" }, el("h2", { text: title }), content);
}
