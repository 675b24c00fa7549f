// One processing block: state, deployments (with the Dask dashboard of a running engine),
// buffers and their files, and the workflow log streaming from /api/blocks/{id}/log/stream.
import { badge, blockLink, bytes, el, getJSON, section, showError, subscribe, table, when } from "./common.js";

const pbId = decodeURIComponent(location.pathname.split("/")[2] || "");
const main = document.getElementById("main");
const MAX_LOG_CHUNKS = 500;  // pieces of log kept in the page (memory stays bounded)

const parts = {
  summary: el("div", { id: "summary" }),
  deployments: el("div", { id: "deployments" }),
  buffers: el("div", { id: "buffers" }),
  logs: el("div", { id: "logs" }),
  log: el("pre", { class: "log", id: "log" }),
};

function fileLink(path, text) {
  return el("a", { href: `/files/${path.split("/").map(encodeURIComponent).join("/")}`, text });
}

function summary(block) {
  const links = (ids) => (ids.length ? ids.map((id, i) => [i ? ", " : "", blockLink(id)]) : "-");
  const wf = block.workflow || {};
  return [
    el("h1", {}, `Processing block ${block.id} `, el("span", { id: "block-status" }, badge(block.status))),
    el("dl", { class: "facts" },
      el("dt", { text: "reason" }), el("dd", { class: block.reason ? "reason" : "muted", id: "block-reason", text: block.reason || "-" }),
      el("dt", { text: "workflow" }), el("dd", { text: `${wf.type}:${wf.id}:${wf.version}` }),
      el("dt", { text: "SBI" }), el("dd", { text: block.sbi_id ?? "-" }),
      el("dt", { text: "depends on" }), el("dd", {}, links(block.dependencies.map((d) => d.pb_id))),
      el("dt", { text: "needed by" }), el("dd", {}, links(block.dependents)),
      el("dt", { text: "resources" }), el("dd", { text: block.resources_available ? "available" : "not yet" }),
      el("dt", { text: "owner" }), el("dd", { text: block.owner ? `${block.owner.hostname ?? ""} pid ${block.owner.pid ?? "?"}` : "-" })),
    el("details", {}, el("summary", { text: "parameters" }), el("pre", { text: JSON.stringify(block.parameters, null, 2) })),
  ];
}

function deployments(block) {
  if (!block.deployments.length) return el("p", { class: "muted", text: "no deployment now (they go when the block ends)" });
  return table(["id", "type", "status", "processes", "Dask dashboard", "log"], block.deployments.map((d) =>
    el("tr", { "data-deployment": d.id },
      el("td", { text: d.id }),
      el("td", { text: d.type ?? "-" }),
      el("td", {}, badge(d.status), d.error ? el("div", { class: "reason", text: d.error }) : null),
      el("td", { text: d.processes.map((p) => `${p.name} ${p.pid}${p.alive ? "" : " (ended)"}`).join(", ") || "-" }),
      el("td", {}, d.dashboard_url ? el("a", { class: "dashboard", href: d.dashboard_url, target: "_blank", rel: "noopener", text: "open dashboard" }) : "-"),
      el("td", {}, d.log ? fileLink(d.log, d.log) : "-"))));
}

function buffers(block) {
  if (!block.buffers.length) return el("p", { class: "muted", text: "no buffer yet" });
  return block.buffers.map((b) =>
    el("div", { "data-buffer": b.name },
      el("h2", {}, `${b.name} `, el("span", { class: "muted", text: `${bytes(b.size_bytes)}, created ${when(b.created)}` }), " ",
        b.product ? el("a", { class: "product", href: `/products/${encodeURIComponent(b.name)}`, text: "→ images and figures" }) : null),
      table(["file", "kind", "size ", "bytes "], b.files.map((f) =>
        el("tr", { "data-file": f.path },
          el("td", {}, f.kind === "file" ? fileLink(f.path, f.name) : f.name),
          el("td", { text: f.kind }),
          el("td", { class: "num", text: bytes(f.size_bytes) }),
          el("td", { class: "num size-bytes", text: f.size_bytes }))))));
}

function logs(block) {
  return el("p", {}, "logs: ", block.logs.length ? block.logs.map((l, i) => [i ? ", " : "", fileLink(l.path, l.name), ` (${bytes(l.size_bytes)})`]) : "none yet");
}

async function refresh() {
  try {
    const block = await getJSON(`/api/blocks/${encodeURIComponent(pbId)}`);
    parts.summary.replaceChildren(...summary(block));
    parts.deployments.replaceChildren(deployments(block));
    parts.buffers.replaceChildren(...[buffers(block)].flat());
    parts.logs.replaceChildren(logs(block));
  } catch (error) {
    showError(parts.summary, error);
  }
}

let pending = null;
function refreshSoon() {  // at most one refresh in flight, a burst of events gives one more
  if (pending) return;
  pending = setTimeout(async () => { await refresh(); pending = null; }, 200);
}

function appendLines(data) {
  const log = parts.log;
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
  log.append(data.lines.join("\n") + "\n");
  while (log.childNodes.length > MAX_LOG_CHUNKS) log.removeChild(log.firstChild);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

main.replaceChildren(
  parts.summary,
  section("Workflow log (streaming)", parts.log, parts.logs),
  section("Deployments", parts.deployments),
  section("Buffers", parts.buffers));
refresh();
subscribe("/api/events", "overview", refreshSoon);
subscribe(`/api/blocks/${encodeURIComponent(pbId)}/log/stream`, "lines", appendLines);
