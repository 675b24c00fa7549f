// One image product: restored and residual images (RA/Dec axes, the beam), gains per station,
// and the per-cycle figures of qa.json, all drawn by the server from the files.
import { angle, connection, el, getJSON, number, section, showError, table } from "./common.js";

const buffer = decodeURIComponent(location.pathname.split("/")[2] || "");
const main = document.getElementById("main");
const base = encodeURIComponent(buffer);

function figure(id, src, caption) {
  return el("figure", {}, el("img", { id, src, alt: caption }), el("figcaption", { text: caption }));
}

function fileLink(name) {
  return el("a", { href: `/files/${base}/${encodeURIComponent(name)}`, text: name });
}

function imageFacts(role, s) {
  const beam = s.beam ? `${angle(s.beam.bmaj_deg)} × ${angle(s.beam.bmin_deg)}, PA ${number(s.beam.bpa_deg, 3)}°` : "(drawn: the restored image's)";
  return table(["", "value"], [
    ["file", fileLink(s.file)], ["pixels", `${s.npixel[0]} × ${s.npixel[1]} of ${angle(s.cell_deg)}`],
    ["centre (RA, Dec)", `${number(s.centre_deg[0], 6)}°, ${number(s.centre_deg[1], 6)}°`],
    ["frequency", `${number(s.frequency_hz / 1e6, 5)} MHz`], ["beam", beam],
    ["peak", `${number(s.peak)} ${s.unit}`], ["min", `${number(s.min)} ${s.unit}`], ["rms", `${number(s.rms)} ${s.unit}`],
  ].map(([k, v]) => el("tr", {}, el("td", { class: "muted", text: k }), el("td", {}, v))), { id: `facts-${role}` });
}

function qaFacts(qa) {
  const rows = [
    ["restored peak", qa.restored && number(qa.restored.peak)], ["restored rms", qa.restored && number(qa.restored.rms)],
    ["dynamic range", qa.restored && number(qa.restored.dynamic_range)], ["cycles", qa.cycles],
    ...Object.entries(qa.truth || {}).map(([k, v]) => [`vs truth: ${k.replaceAll("_", " ")}`, number(v)]),
    ...Object.entries(qa.timings_s || {}).map(([k, v]) => [`time: ${k}`, `${number(v, 3)} s`]),
  ];
  return table(["", "value"], rows.map(([k, v]) => el("tr", {}, el("td", { class: "muted", text: k }), el("td", { text: v ?? "-" }))));
}

async function load() {
  try {
    const [product, record] = await Promise.all([
      getJSON(`/api/products/${base}`),
      getJSON(`/api/buffers/${base}`).catch(() => null),
    ]);
    const pb = record && record.pb_id;
    const images = Object.entries(product.images).map(([role, s]) =>
      el("div", {}, figure(`img-${role}`, `/render/${base}/${role}.png`, `${role} image from ${s.file}`), imageFacts(role, s)));
    main.replaceChildren(
      el("h1", {}, `Image product ${buffer} `, pb ? el("span", { class: "muted" }, "of ", el("a", { href: `/blocks/${encodeURIComponent(pb)}`, text: pb })) : null),
      section("Images", el("div", { class: "grid" }, images)),
      product.gains ? section("Gains per station", figure("img-gains", `/render/${base}/gains.png`,
        `solved terms ${product.gains.map((g) => `${g.term} (${g.stations} stations × ${g.times} intervals × ${g.frequencies} channels)`).join(", ")}; data: /api/products/${buffer}/gains`)) : null,
      product.qa ? section("Per cycle (qa.json)", el("div", { class: "grid" },
        figure("img-qa", `/render/${base}/qa.png`, "clean and calibration per major cycle; data: /api/products/" + buffer + "/qa"), qaFacts(product.qa))) : null,
      section("Files", el("p", {}, product.files.map((name, i) => [i ? ", " : "", fileLink(name)]))));
    connection("live", "loaded");
  } catch (error) {
    showError(main, error);
  }
}

load();
