// The brand page: polls GET /brands (and GET /brands/{brand}) and draws them. No library, no build step.
// Text from the topic only ever goes through textContent (never innerHTML).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg"; // a namespace name, not an address: nothing is fetched
const REFRESH_MS = 1000 * (Number(document.body.dataset.refreshSeconds) || 5);
const MAX_CARDS_WITH_CHART = 30; // the overview fetches each brand's windows for its chart, up to this many
const BRAND = brandOfPath(location.pathname);

function brandOfPath(path) {
  const match = /^\/brands\/([^/]+)\/?$/.exec(path);
  return match ? decodeURIComponent(match[1]) : null;
}

// --- small helpers ------------------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

const pct = (x) => `${Math.round(100 * x)}%`;
const postCount = (n) => `${n} post${n === 1 ? "" : "s"}`;
const signed = (x, digits) => (x > 0 ? "+" : "") + x.toFixed(digits);

function clock(iso, seconds) {
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds < 60) options.second = "2-digit";
  return new Date(iso).toLocaleTimeString([], options);
}

function span(w) {
  return `${clock(w.window_start, w.window_seconds)}–${clock(w.window_end, w.window_seconds)}`;
}

function state(w) {
  if (w.alert) return { cls: "alert", label: "Alert" };
  if (!w.warm) return { cls: "learning", label: "Learning" };
  return { cls: "calm", label: "Calm" };
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.detail) || `${path} answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// --- the chart: negative share per window against the usual share ----------------------------------------------
function chart(windows, { width = 1000, height = 300, compact = false } = {}) {
  const pad = compact ? { l: 4, r: 4, t: 6, b: 4 } : { l: 40, r: 12, t: 10, b: 24 };
  const root = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "negative share per window against the brand's usual share",
  });
  if (!windows.length) return root;
  const t0 = Date.parse(windows[0].window_start);
  const t1 = Date.parse(windows[windows.length - 1].window_end);
  const highest = Math.max(...windows.map((w) => Math.max(w.negative_share, w.baseline_share)));
  const top = Math.min(1, Math.max(0.5, Math.ceil((highest + 0.05) * 4) / 4)); // a gridline at the top
  const x = (t) => pad.l + ((t - t0) / Math.max(1, t1 - t0)) * (width - pad.l - pad.r);
  const y = (share) => pad.t + (1 - share / top) * (height - pad.t - pad.b);
  const bottom = height - pad.b;
  const mostPosts = Math.max(1, ...windows.map((w) => w.total));

  for (const w of windows) {
    const left = x(Date.parse(w.window_start));
    const right = x(Date.parse(w.window_end));
    if (w.alert) {
      root.append(svg("rect", { class: "alert-band", x: left, y: pad.t, width: Math.max(1, right - left), height: bottom - pad.t }));
    }
    const barHeight = ((bottom - pad.t) * 0.15 * w.total) / mostPosts; // posts per window, faint, at the bottom
    root.append(svg("rect", { class: "volume", x: left + 0.5, y: bottom - barHeight, width: Math.max(1, right - left - 1), height: barHeight }));
  }
  if (!compact) {
    for (const tick of [0.25, 0.5, 0.75, 1].filter((t) => t <= top + 1e-9)) {
      root.append(svg("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(tick), y2: y(tick) }));
      const label = svg("text", { class: "axis", x: pad.l - 6, y: y(tick) + 4, "text-anchor": "end" });
      label.textContent = pct(tick);
      root.append(label);
    }
    const seconds = windows[0].window_seconds;
    for (const [t, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
      const label = svg("text", { class: "axis", x: x(t), y: height - 6, "text-anchor": anchor });
      label.textContent = clock(new Date(t).toISOString(), seconds);
      root.append(label);
    }
  }
  const mid = (w) => (Date.parse(w.window_start) + Date.parse(w.window_end)) / 2;
  const line = (value, some = windows) => some.map((w) => `${x(mid(w)).toFixed(1)},${y(value(w)).toFixed(1)}`).join(" ");
  // The usual share exists once the baseline is warm; before, it is a guess from a few windows.
  const warm = windows.filter((w) => w.warm);
  if (warm.length) root.append(svg("polyline", { class: "usual", points: line((w) => w.baseline_share, warm) }));
  root.append(svg("polyline", { class: "share-line", points: line((w) => w.negative_share) }));
  for (const w of windows) {
    const dot = svg("circle", {
      class: w.alert ? "dot alert" : "dot",
      cx: x(mid(w)).toFixed(1),
      cy: y(w.negative_share).toFixed(1),
      r: w.alert ? (compact ? 3.5 : 5) : compact ? 1.8 : 2.5,
    });
    const tip = svg("title", {});
    tip.textContent = `${span(w)}: ${pct(w.negative_share)} negative of ${w.total} posts (usual ${pct(w.baseline_share)}, z ${w.zscore.toFixed(1)})`;
    dot.append(tip);
    root.append(dot);
  }
  return root;
}

function legend() {
  return el(
    "p",
    { class: "legend" },
    el("span", { class: "key share" }), "negative share",
    el("span", { class: "key usual" }), "usual (baseline)",
    el("span", { class: "key alert" }), "alert window",
    el("span", { class: "key volume" }), "posts per window",
  );
}

function chips(terms, cls, limit) {
  return terms.slice(0, limit).map((t) => el("span", { class: `chip ${cls}`, text: t.term, title: postCount(t.count) }));
}

// --- the overview: every brand ---------------------------------------------------------------------------------
function crisisBanner(alerting) {
  if (!alerting.length) {
    return el("div", { class: "calm-all", text: "No brand is in a crisis: every negative share is within its usual range." });
  }
  return el(
    "div",
    { class: "crisis", id: "crisis" },
    el("h2", { text: alerting.length === 1 ? `${alerting[0].brand} is in trouble` : `${alerting.length} brands are in trouble` }),
    alerting.map((b) =>
      el(
        "p",
        {},
        el("a", { href: `/brands/${encodeURIComponent(b.brand)}` }, el("strong", { text: b.brand })),
        `: ${pct(b.negative_share)} of ${b.total} posts negative (usually ${pct(b.baseline_share)}), ` +
          `${b.volume_ratio.toFixed(1)}× the usual negative volume. People complain about: `,
        el("strong", { text: b.top_negative_terms.slice(0, 5).map((t) => t.term).join(", ") || "(no terms)" }),
      ),
    ),
  );
}

function card(b, windows) {
  const s = state(b);
  const link = `/brands/${encodeURIComponent(b.brand)}`;
  return el(
    "section",
    { class: b.alert ? "card alerting" : "card", "data-brand": b.brand, "data-state": s.cls },
    el("h2", {}, el("a", { href: link, text: b.brand }), el("span", { class: `badge ${s.cls}`, text: s.label })),
    el(
      "p",
      { class: b.alert ? "share bad" : "share" },
      el("strong", { text: pct(b.negative_share) }),
      ` negative, usually ${pct(b.baseline_share)}`,
    ),
    el(
      "p",
      { class: "figures" },
      `${b.total} posts in ${span(b)} · net ${signed(b.net_sentiment, 2)} · z ${b.zscore.toFixed(1)} · ` +
        `volume ×${b.volume_ratio.toFixed(1)}`,
    ),
    windows ? chart(windows, { width: 320, height: 70, compact: true }) : null,
    el("p", { class: "terms" }, el("span", { class: "label", text: "Complaints:" }), chips(b.top_negative_terms, "neg", 6)),
    el("p", { class: "terms" }, el("span", { class: "label", text: "Praise:" }), chips(b.top_positive_terms, "pos", 6)),
  );
}

async function overview() {
  const { brands } = await getJSON("/brands");
  const ordered = [...brands].sort((a, b) => Number(b.alert) - Number(a.alert) || b.zscore - a.zscore);
  const details = await Promise.all(
    ordered.slice(0, MAX_CARDS_WITH_CHART).map((b) =>
      getJSON(`/brands/${encodeURIComponent(b.brand)}`).then((d) => d.windows, () => null),
    ),
  );
  const main = el(
    "main",
    { id: "main" },
    crisisBanner(ordered.filter((b) => b.alert)),
    ordered.length
      ? el("div", { class: "cards" }, ordered.map((b, i) => card(b, details[i])))
      : el("p", { class: "quiet", text: "No brand on the reputation topic yet: windows appear as the stage closes them." }),
    ordered.length ? legend() : null,
  );
  document.getElementById("main").replaceWith(main);
}

// --- one brand --------------------------------------------------------------------------------------------------
function highlighted(text, terms, cls) {
  // The telling words are normalised (lower-case) tokens: mark them wherever they stand as words.
  const words = [...new Set(terms)].filter(Boolean).sort((a, b) => b.length - a.length);
  const node = el("span", {});
  if (!words.length) {
    node.textContent = text;
    return node;
  }
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}_])(${escaped.join("|")})(?![\\p{L}\\p{N}_])`, "giu");
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    node.append(text.slice(at, match.index), el("mark", { class: cls, text: match[0] }));
    at = match.index + match[0].length;
  }
  node.append(text.slice(at));
  return node;
}

function termBars(terms, cls) {
  if (!terms.length) return el("p", { class: "quiet", text: "Nothing stands out." });
  const strongest = terms[0].pull;
  return el(
    "ul",
    { class: `bars ${cls}` },
    terms.map((t) => {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(4, (100 * t.pull) / strongest)}%`;
      return el("li", {}, el("span", { class: "term", text: t.term }), el("span", { class: "track" }, bar), el("span", { class: "n", text: postCount(t.count) }));
    }),
  );
}

function posts(examples, cls) {
  if (!examples.length) return el("p", { class: "quiet", text: "No example posts in the latest windows." });
  return el("ul", { class: `posts ${cls}` }, examples.map((p) => el("li", {}, highlighted(p.text, p.terms, cls))));
}

function headline(d) {
  const w = d.latest;
  const when = span(w);
  if (w.alert) {
    const about = d.top_negative_terms.slice(0, 3).map((t) => t.term).join(", ");
    return el(
      "p",
      { class: "headline bad", id: "headline" },
      `${d.brand} is in trouble: ${pct(w.negative_share)} of ${w.total} posts in ${when} were negative, usually ` +
        `${pct(w.baseline_share)} (z ${w.zscore.toFixed(1)}, ${w.volume_ratio.toFixed(1)}× the usual negative volume)` +
        (about ? `. People complain about ${about}.` : "."),
    );
  }
  if (!w.warm) {
    return el("p", { class: "headline", id: "headline" }, `${d.brand}: still learning its usual mood (${pct(w.negative_share)} negative of ${w.total} posts in ${when}); it cannot alert yet.`);
  }
  return el(
    "p",
    { class: "headline", id: "headline" },
    `${d.brand} is calm: ${pct(w.negative_share)} of ${w.total} posts in ${when} were negative, usually ${pct(w.baseline_share)} (z ${w.zscore.toFixed(1)}).`,
  );
}

function windowTable(windows) {
  const head = ["window", "posts", "negative", "neutral", "positive", "negative share", "usual", "z", "volume"];
  const rows = [...windows].reverse().slice(0, 12).map((w) =>
    el(
      "tr",
      { class: w.alert ? "alert" : null },
      [span(w), w.total, w.negative, w.neutral, w.positive, pct(w.negative_share), pct(w.baseline_share), w.zscore.toFixed(1), `×${w.volume_ratio.toFixed(1)}`].map(
        (v) => el("td", { text: String(v) }),
      ),
    ),
  );
  return el("table", { class: "windows" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))), el("tbody", {}, rows));
}

async function brandView(name) {
  const d = await getJSON(`/brands/${encodeURIComponent(name)}`);
  const s = state(d.latest);
  document.title = `${d.brand}: brand reputation`;
  document.getElementById("crumb").textContent = ` › ${d.brand}`;
  const main = el(
    "main",
    { id: "main", "data-brand": d.brand, "data-state": s.cls },
    el("p", {}, el("a", { href: "/", text: "← all brands" }), " ", el("span", { class: `badge ${s.cls}`, text: s.label })),
    headline(d),
    el("section", { class: "panel" }, el("h3", { text: `Negative share per window, last ${d.windows.length} windows` }), chart(d.windows), legend()),
    el(
      "div",
      { class: "two" },
      el("section", { class: "panel", id: "complaints" }, el("h3", { text: "What people complain about" }), termBars(d.top_negative_terms, "neg")),
      el("section", { class: "panel", id: "praise" }, el("h3", { text: "What people praise" }), termBars(d.top_positive_terms, "pos")),
    ),
    el(
      "div",
      { class: "two" },
      el("section", { class: "panel" }, el("h3", { text: "Negative posts" }), posts(d.negative_examples, "neg")),
      el("section", { class: "panel" }, el("h3", { text: "Positive posts" }), posts(d.positive_examples, "pos")),
    ),
    el("section", { class: "panel" }, el("h3", { text: "Latest windows" }), windowTable(d.windows)),
  );
  document.getElementById("main").replaceWith(main);
}

// --- polling ----------------------------------------------------------------------------------------------------
async function refresh() {
  const problem = document.getElementById("problem");
  try {
    await (BRAND === null ? overview() : brandView(BRAND));
    problem.hidden = true;
    const now = new Date().toLocaleTimeString([], { hourCycle: "h23" });
    document.getElementById("updated").textContent = `updated ${now}, every ${REFRESH_MS / 1000} s`;
  } catch (error) {
    problem.hidden = false;
    problem.textContent =
      (error.status === 404 ? "" : "The figures cannot be updated: ") + error.message +
      (document.querySelector("[data-state]") ? " (showing the last figures received)" : "");
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
