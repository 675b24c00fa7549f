// The components of `sdpbatch up` (processes, alive, restarts), the configuration database's
// health, the subarrays and the space under the data root, from /api/system every 2 s.
import { badge, bytes, connection, el, getJSON, number, section, showError, table, when } from "./common.js";

const main = document.getElementById("main");

function componentRows(processes) {
  return processes.map((p) =>
    el("tr", { "data-component": p.name },
      el("td", { text: p.name }),
      el("td", { class: "num", text: p.pid }),
      el("td", {}, badge(p.alive ? "alive" : "stopped")),
      el("td", { class: "num", text: p.restarts ?? "not recorded" }),
      el("td", { class: "muted", text: p.log })));
}

function subarrayRows(subarrays) {
  return subarrays.map((s) =>
    el("tr", {},
      el("td", { text: s.id }),
      el("td", {}, badge(s.state ?? "-")),
      el("td", { text: s.obs_state_target ?? "-" }),
      el("td", { text: s.last_command ?? "-" }),
      el("td", { text: s.sbi_id ?? "-" })));
}

function render(view) {
  const services = view.services;
  const db = view.database;
  main.replaceChildren(
    el("h1", {}, "System ", badge(services.state), " ", el("span", { class: "muted", text: view.data_dir })),
    section("Components",
      services.processes.length
        ? table(["component", "pid ", "state", "restarts ", "log"], componentRows(services.processes), { id: "components" })
        : el("p", { class: "muted", text: "no component of 'sdpbatch up' recorded for this data root" })),
    section("Configuration database",
      el("dl", { class: "facts", id: "database" },
        el("dt", { text: "state" }), el("dd", {}, badge(db.ok ? "ok" : "unreachable")),
        el("dt", { text: db.ok ? "answer time" : "error" }),
        el("dd", { text: db.ok ? `${number(db.ms, 3)} ms (${db.backend})` : db.error }),
        el("dt", { text: "address" }),
        el("dd", { text: services.env ? `${services.env.SDP_CONFIG_HOST}:${services.env.SDP_CONFIG_PORT}` : "-" }))),
    section("Subarrays",
      table(["subarray", "state", "obsState (target)", "last command", "SBI"], subarrayRows(view.subarrays))),
    section("Data root",
      el("dl", { class: "facts" },
        el("dt", { text: "free" }), el("dd", { text: `${bytes(view.disk.free_bytes)} of ${bytes(view.disk.total_bytes)}` }),
        el("dt", { text: "logs" }), el("dd", { text: services.logs ?? "-" }),
        el("dt", { text: "as of" }), el("dd", { text: when(view.time) }))));
}

async function refresh() {
  try {
    render(await getJSON("/api/system"));
    connection("live", "live");
  } catch (error) {
    connection("lost", "unreachable");
    showError(main, error);
  }
}

refresh();
setInterval(refresh, 2000);
