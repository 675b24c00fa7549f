// Scheduling block instances, processing blocks, deployments and buffers, updated live from
// /api/events (server-sent events of /api/overview): no reloads.
import { badge, blockLink, bytes, el, getJSON, section, showError, subscribe, table } from "./common.js";

const main = document.getElementById("main");

function sbiRows(sbis) {
  return sbis.map((sbi) =>
    el("tr", { "data-sbi": sbi.id },
      el("td", { text: sbi.id }),
      el("td", { class: "sbi-status" }, badge(sbi.status)),
      el("td", { text: sbi.subarray_id ?? "-" }),
      el("td", {}, sbi.processing_blocks.map((id, i) => [i ? ", " : "", blockLink(id)])),
      el("td", { text: [sbi.current_scan_type, sbi.scan_id].filter((x) => x !== null && x !== undefined).join(" / ") || "-" })));
}

function blockRows(blocks) {
  return blocks.map((pb) => {
    return el("tr", { "data-pb": pb.id },
      el("td", {}, blockLink(pb.id)),
      el("td", { text: pb.sbi_id ?? "-" }),
      el("td", { text: pb.workflow }),
      el("td", { class: "pb-status", "data-pb": pb.id }, badge(pb.status)),
      el("td", { class: pb.reason ? "reason" : "muted", text: pb.reason || (pb.resources_held ? "resources held" : "") }),
      el("td", {}, pb.dependencies.length ? pb.dependencies.map((id, i) => [i ? ", " : "", blockLink(id)]) : "-"));
  });
}

function deploymentRows(deployments) {
  return deployments.map((d) =>
    el("tr", { "data-deployment": d.id },
      el("td", { text: d.id }),
      el("td", { text: d.type ?? "-" }),
      el("td", {}, badge(d.status)),
      el("td", { text: d.processes.map((p) => `${p.pid}${p.alive ? "" : " (ended)"}`).join(", ") || "-" })));
}

function bufferRows(buffers) {
  return buffers.map((b) =>
    el("tr", { "data-buffer": b.name },
      el("td", { text: b.name }),
      el("td", {}, b.pb_id ? blockLink(b.pb_id) : "-"),
      el("td", { class: "num", text: bytes(b.size_bytes) }),
      el("td", {}, b.product ? el("a", { href: `/products/${encodeURIComponent(b.name)}`, text: "images" }) : "-")));
}

function render(snapshot) {
  if (snapshot.error) {
    showError(main, new Error(`configuration database: ${snapshot.error}`));
    return;
  }
  const updated = new Date(snapshot.time * 1000).toLocaleTimeString();
  main.replaceChildren(
    el("h1", {}, "Scheduling blocks and processing blocks ", el("span", { class: "muted", id: "updated", text: `as of ${updated}` })),
    section("Scheduling block instances",
      table(["id", "status", "subarray", "processing blocks", "scan type / id"], sbiRows(snapshot.sbis), { id: "sbis" })),
    section("Processing blocks",
      table(["id", "SBI", "workflow", "status", "reason", "depends on"], blockRows(snapshot.processing_blocks), { id: "blocks" })),
    section("Deployments",
      table(["id", "type", "status", "processes"], deploymentRows(snapshot.deployments), { id: "deployments" })),
    section("Buffers",
      table(["name", "block", "size ", "product"], bufferRows(snapshot.buffers), { id: "buffers" })));
}

getJSON("/api/overview").then(render).catch((error) => showError(main, error));
subscribe("/api/events", "overview", render);
