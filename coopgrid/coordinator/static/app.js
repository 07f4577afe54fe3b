// coopgrid dashboard: reads the coordinator's JSON API with the token the person logged in with.
// Every value from the API is put into the page as text (never as HTML): job names and worker
// names are chosen by submitters and workers.
"use strict";

const POLL_MS = 1500;
// views whose API calls read more of the store are asked less often
const POLL_SLOW = { workers: 5000, epochs: 3000, models: 10000 };
const TOKEN_KEY = "coopgrid-token";
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  skew: 0, // server clock minus this browser's, in seconds
  rates: {}, // job id -> {done, at, rate}
  timer: null,
  seq: 0,
  anchors: {}, // model hash -> on-chain record
};

// -- small helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "onclick") el.addEventListener("click", v);
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const short = (s, n = 10) => (s && s.length > n + 2 ? s.slice(0, n) + "…" : s || "–");
const nowServer = () => Date.now() / 1000 + state.skew;

function ago(t) {
  if (!t) return "–";
  const s = Math.max(0, nowServer() - t);
  if (s < 2) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function badge(text, cls) {
  return h("span", { class: `badge ${cls || text}` }, text);
}

function hash(value, n = 10) {
  return value ? h("span", { class: "mono", title: value }, short(value, n)) : "–";
}

function stat(label, value, bad) {
  return h("div", { class: bad ? "stat bad" : "stat" }, h("div", { class: "n" }, value), h("div", { class: "l" }, label));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function table(headers, rows, emptyText) {
  const head = h("tr", {}, headers.map((x) => h("th", { class: x.startsWith("#") ? "num" : null }, x.replace(/^#/, ""))));
  const body = rows.length ? rows : [h("tr", {}, h("td", { class: "empty", colspan: headers.length }, emptyText))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

function progress(job, big) {
  const total = Math.max(job.tasks, 1);
  const part = (n, cls) => (n > 0 ? h("span", { class: cls, style: `width:${(100 * n) / total}%` }) : null);
  const pct = Math.floor((100 * job.tasks_done) / total);
  return h("div", { class: "progress" },
    h("div", { class: big ? "bar big" : "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0,
      "aria-valuemax": 100 },
      part(job.tasks_done, "done"), part(job.tasks_failed, "failed"), part(job.tasks_inconclusive, "inconclusive")),
    h("span", { class: "pct" }, `${fmt(job.tasks_done)} / ${fmt(job.tasks)}`));
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const r = await fetch(path, { headers, cache: "no-store", ...opts });
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, body);
  }
  return opts.raw ? r : r.json();
}

// tasks/s of a running job, smoothed over the polls this page saw; the average since submission before that
function rate(job) {
  const now = nowServer();
  const seen = state.rates[job.id];
  if (job.state !== "running") {
    const s = job.summary;
    return s && s.elapsed_seconds ? job.tasks_done / s.elapsed_seconds : null;
  }
  let r = job.tasks_done / Math.max(now - job.created_at, 1e-3);
  if (seen && now > seen.at) {
    const instant = (job.tasks_done - seen.done) / (now - seen.at);
    r = seen.rate === null ? instant : 0.6 * seen.rate + 0.4 * instant;
  }
  state.rates[job.id] = { done: job.tasks_done, at: now, rate: seen ? r : null };
  return r;
}

// -- login --------------------------------------------------------------------------

async function login(token) {
  state.token = token;
  const grid = await api("/v1/grid"); // checks the token
  sessionStorage.setItem(TOKEN_KEY, token);
  state.me = grid.you;
  return grid;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.seq++;
  clearTimeout(state.timer);
  showLogin(message || "");
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#tabs").hidden = true;
  $("#who").hidden = true;
  $("#overview").hidden = true;
  $("#view").replaceChildren();
  $("#login-error").textContent = message;
  $("#token").focus();
}

function showApp() {
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  $("#who").hidden = false;
  $("#overview").hidden = false;
  $("#who-name").replaceChildren(state.me.name, " ", h("span", { class: "role" }, state.me.role));
}

// -- overview -----------------------------------------------------------------------

function overview(g) {
  state.skew = g.now - Date.now() / 1000;
  const chip = (label, value, bad) =>
    h("div", { class: bad ? "chip bad" : "chip" }, h("div", { class: "n" }, value), h("div", { class: "l" }, label));
  const w = g.workers;
  const chips = [
    chip("workers active", fmt(w.active)),
    chip("workers idle", fmt(w.idle)),
    chip("quarantined", fmt(w.quarantined), w.quarantined > 0),
    chip("leases open", fmt(g.open_leases)),
    chip("replicas queued", fmt(g.queued_replicas)),
  ];
  if (g.ledger !== "none") {
    chips.push(chip("results to seal", fmt(g.unsealed_results)));
    chips.push(chip("last epoch commit", g.last_commit_age === null ? "never" : duration(g.last_commit_age) + " ago"));
  } else {
    chips.push(chip("ledger", "none"));
  }
  $("#overview").replaceChildren(...chips);
}

// -- views --------------------------------------------------------------------------

const views = {
  async jobs() {
    const jobs = await api("/v1/jobs?limit=200");  // the newest; a long-lived grid has many more
    jobs.sort((a, b) => b.created_at - a.created_at);
    const scope = state.me.role === "operator" ? "every submitter's jobs" : "your jobs";
    const rows = jobs.map((j) => {
      const r = rate(j);
      const problems = j.tasks_failed + j.tasks_inconclusive;
      return h("tr", { class: "click", "data-job": j.id, "data-state": j.state,
        onclick: () => { location.hash = `#/jobs/${j.id}`; } },
        h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.name), h("div", { class: "muted mono" }, short(j.id, 16))),
        h("td", {}, j.task_type),
        h("td", {}, badge(j.state)),
        h("td", {}, progress(j)),
        h("td", { class: "num" }, r === null ? "–" : `${r.toFixed(r < 10 ? 1 : 0)}/s`),
        h("td", { class: "num" }, problems ? h("span", { class: "reason" }, fmt(problems)) : "0"),
        h("td", {}, ago(j.created_at)));
    });
    return [h("div", { class: "card" }, h("h2", {}, `Jobs (${scope})`),
      table(["job", "type", "state", "progress", "#tasks/s", "#failed", "submitted"], rows,
        "No jobs yet: `coopgrid submit` sends one."))];
  },

  async job(id) {
    const [job, fail] = await Promise.all([api(`/v1/jobs/${encodeURIComponent(id)}`),
      api(`/v1/jobs/${encodeURIComponent(id)}/failures`)]);
    const r = rate(job);
    const s = job.summary || {};
    const reps = job.replicas || {};
    const download = job.output
      ? h("button", { type: "button", id: "download", onclick: () => downloadOutput(job) }, "Download output (Parquet)")
      : null;
    const head = h("div", { class: "card", "data-job": job.id, "data-state": job.state },
      h("div", { class: "title-row" }, h("h1", {}, job.name), badge(job.state), h("span", { class: "spacer" }), download),
      h("div", { class: "muted mono" }, job.id),
      h("div", { style: "margin-top:14px" }, progress(job, true)),
      h("div", { class: "stats" },
        stat("tasks done", fmt(job.tasks_done)),
        stat("tasks failed", fmt(job.tasks_failed), job.tasks_failed > 0),
        stat("inconclusive", fmt(job.tasks_inconclusive), job.tasks_inconclusive > 0),
        stat("tasks", fmt(job.tasks)),
        stat("items", fmt(job.items)),
        stat("tasks/s", r === null ? "–" : r.toFixed(r < 10 ? 1 : 0)),
        stat(job.finished_at ? "took" : "running for",
          duration((job.finished_at || nowServer()) - job.created_at))));

    const reasons = fail.reasons.map((f) =>
      h("tr", {}, h("td", { class: "reason" }, f.reason), h("td", { class: "num" }, fmt(f.replicas))));
    const failures = h("div", { class: "card", id: "failures" }, h("h2", {}, "Failures"),
      job.seal_error ? h("div", { class: "alert" }, "Held out of sealing: ", job.seal_error) : null,
      job.tasks_inconclusive ? h("p", {}, `${fmt(job.tasks_inconclusive)} task(s) got no agreeing quorum within `
        + "their replica limit: reported, not guessed.") : null,
      reasons.length || job.tasks_failed
        ? table(["reason reported by workers", "#replicas"], reasons, "No reasons reported.")
        : h("p", { class: "muted" }, "No worker reported an error."));

    const trust = job.trust || {};
    const results = s.results || {};
    const byKind = s.replicas_by_kind || {};
    const trustCard = h("div", { class: "card" }, h("h2", {}, "Trust"),
      kv([
        ["policy", `${trust.replicas} replica(s), quorum ${trust.quorum}, up to ${trust.max_replicas}; `
          + `gold rate ${trust.gold_rate}; adaptive ${trust.adaptive ? "on" : "off"}`],
        ["replicas now", Object.entries(reps).map(([k, v]) => `${fmt(v)} ${k}`).join(", ") || "–"],
        job.summary && ["results", Object.entries(results).sort().map(([k, v]) => `${fmt(v)} ${k}`).join(", ") || "–"],
        job.summary && ["replicas by kind", Object.entries(byKind).map(([k, v]) => `${fmt(v)} ${k}`).join(", ") || "–"],
        job.summary && ["replicas per task", s.replicas_per_task === null ? "–" : `${s.replicas_per_task} (compute overhead)`],
        job.summary && ["provisional tasks", fmt(s.tasks_provisional)],
        job.summary && ["workers credited", fmt(s.workers)],
        job.summary && s.accuracy !== undefined && ["accuracy", `${(100 * s.accuracy).toFixed(2)}% of ${fmt(s.labelled_items)} labelled`],
      ]));
    const about = h("div", { class: "card" }, h("h2", {}, "Job"),
      kv([
        ["task type", job.task_type],
        ["model", job.model ? h("a", { href: "#/models", title: job.model, class: "mono" }, short(job.model, 16)) : "–"],
        ["dataset", hash(job.dataset, 16)],
        ["task size", `${fmt(job.task_size)} items`],
        ["reward per task", job.reward_per_task],
        ["params", Object.keys(job.params || {}).length ? JSON.stringify(job.params) : "–"],
        ["submitted", new Date(job.created_at * 1000).toLocaleString()],
        ["output", job.output ? hash(job.output, 16) : "not yet"],
      ]));
    return [h("a", { href: "#/jobs", class: "crumb" }, "← all jobs"), head, failures, h("div", { class: "grid2" }, trustCard, about)];
  },

  async workers() {
    const [workers, rewards] = await Promise.all([api("/v1/workers"), api("/v1/grid/rewards")]);
    const paid = Object.fromEntries(rewards.map((r) => [r.address.toLowerCase(), r]));
    const activeSince = nowServer() - (state.leaseSeconds || 60);
    const rows = workers.map((w) => {
      const st = w.quarantined ? "quarantined" : w.last_seen >= activeSince ? "active" : "idle";
      const reward = paid[w.address.toLowerCase()];
      const reps = (w.reputation || []).map((r) => h("span", { class: "rep", title:
        `run ${r.run}, valid ${r.valid}, invalid ${r.invalid}, gold passed ${r.gold_passed}, gold failed ${r.gold_failed}, `
        + `errors ${r.errors}, timeouts ${r.timeouts}, quota ${r.quota}` },
        `${r.task_type}: run ${r.run} · ${r.valid}✓ ${r.invalid}✗ · gold ${r.gold_passed}/${r.gold_failed}`));
      return h("tr", { "data-worker": w.name, "data-state": st },
        h("td", {}, h("strong", {}, w.name || "unnamed"), h("div", { class: "muted mono", title: w.address }, short(w.address, 12))),
        h("td", {}, w.owner || "–"),
        h("td", {}, badge(st), w.quarantined ? h("div", { class: "reason" }, w.quarantine_reason) : null),
        h("td", { class: "num" }, w.prior_quarantines ? h("span", { class: "reason" }, fmt(w.prior_quarantines)) : "0"),
        h("td", {}, reps.length ? reps : h("span", { class: "muted" }, "no results yet")),
        h("td", { class: "num" }, fmt(w.accepted)),
        h("td", { class: "num" }, reward ? fmt(reward.sealed) : "0"),
        h("td", { class: "num" }, reward ? fmt(reward.pending) : "0"),
        h("td", {}, ago(w.last_seen)));
    });
    return [h("div", { class: "card" }, h("h2", {}, "Workers"),
      table(["worker", "owner", "state", "#prior quarantines", "reputation", "#credited", "#rewards sealed",
        "#pending", "last seen"], rows, "No worker has registered yet: `coopgrid worker` starts one."))];
  },

  async epochs() {
    let ledger;
    try {
      ledger = await api("/v1/ledger");
    } catch (e) {
      if (e.status === 409) return [h("div", { class: "card" }, h("h2", {}, "Epochs"), h("p", { class: "muted" }, e.message))];
      throw e;
    }
    const epochs = [...ledger.epochs].sort((a, b) => b.number - a.number);
    const rows = epochs.map((e) => h("tr", { class: "click", "data-epoch": e.number, "data-state": e.state,
      onclick: () => { location.hash = `#/epochs/${e.number}`; } },
      h("td", {}, h("a", { href: `#/epochs/${e.number}` }, `#${e.number}`)),
      h("td", {}, badge(e.state)),
      h("td", { class: "num" }, fmt(e.results)),
      h("td", {}, hash(e.results_root, 14)),
      h("td", {}, hash(e.tx_hash, 14)),
      h("td", { class: "num" }, fmt(e.block_number))));
    const held = ledger.held_jobs.map((j) => h("div", { class: "alert" }, `Job ${j.name} (${short(j.job, 12)}) is held out of sealing: ${j.reason}`));
    return [
      h("div", { class: "card" }, h("h2", {}, "Ledger"),
        kv([["chain", `${ledger.kind}, chain id ${ledger.chain_id}`], ["contract", h("span", { class: "mono" }, ledger.contract)],
          ["coordinator account", h("span", { class: "mono" }, ledger.coordinator)],
          ["results waiting to be sealed", fmt(ledger.unsealed_results)]]), held),
      h("div", { class: "card" }, h("h2", {}, "Epochs"),
        table(["epoch", "state", "#results", "results root", "transaction", "#block"], rows,
          "No epoch yet: accepted results are sealed once enough wait, or by `coopgrid ledger seal`.")),
    ];
  },

  async epoch(number) {
    const e = await api(`/v1/ledger/epochs/${encodeURIComponent(number)}`);
    const tx = e.transaction;
    const chain = e.on_chain;
    const check = chain
      ? h("div", { class: chain.matches ? "okline" : "alert", id: "on-chain" },
        chain.matches ? "The contract holds the same roots as the coordinator sealed."
          : "The roots on chain differ from the coordinator's!")
      : null;
    const jobs = e.jobs.map((id) => h("tr", {}, h("td", {}, h("a", { href: `#/jobs/${id}`, class: "mono" }, id))));
    return [
      h("a", { href: "#/epochs", class: "crumb" }, "← all epochs"),
      h("div", { class: "card", "data-epoch": e.number, "data-state": e.state },
        h("div", { class: "title-row" }, h("h1", {}, `Epoch ${e.number}`), badge(e.state)),
        h("div", { class: "stats" }, stat("results", fmt(e.results)), stat("jobs", fmt(e.jobs.length)),
          stat("block", fmt(e.block_number))),
        check,
        kv([
          ["results root", h("span", { class: "mono" }, e.results_root || "–")],
          ["rewards root", h("span", { class: "mono" }, e.rewards_root || "–")],
          ["sealed", new Date(e.created_at * 1000).toLocaleString()],
          ["committed", e.committed_at ? new Date(e.committed_at * 1000).toLocaleString() : "not yet"],
        ])),
      h("div", { class: "card", id: "transaction" }, h("h2", {}, "Transaction"),
        kv([
          ["hash", h("span", { class: "mono", id: "tx-hash" }, e.tx_hash || "not sent yet")],
          ["block", tx ? fmt(tx.block_number) : "–"],
          ["status", tx ? badge(tx.status ? "mined" : "reverted", tx.status ? "done" : "failed") : "–"],
          ["gas used", tx ? fmt(tx.gas_used) : "–"],
          ["contract", h("span", { class: "mono" }, e.contract)],
          ["chain id", e.chain_id],
          chain && ["results root on chain", h("span", { class: "mono" }, chain.results_root)],
        ]),
        h("p", { class: "hint" }, "Anyone can check a result against this root: ",
          h("code", {}, `coopgrid verify JOB TASK`), " or ", h("code", {}, `GET /v1/ledger/epochs/${e.number}/results-tree`), ".")),
      h("div", { class: "card" }, h("h2", {}, "Jobs with results in this epoch"),
        table(["job"], jobs, "No jobs visible.")),
    ];
  },

  async models() {
    const models = await api("/v1/models");
    await Promise.all(models.map(async (m) => {
      if (state.anchors[m.hash] && state.anchors[m.hash].published) return;
      try { state.anchors[m.hash] = await api(`/v1/ledger/models/${m.hash}`); } catch (e) { state.anchors[m.hash] = null; }
    }));
    const rows = models.map((m) => {
      const a = state.anchors[m.hash];
      const anchor = a === null || a === undefined ? h("span", { class: "muted" }, "no ledger")
        : a.published ? [badge("anchored", "yes"), h("span", { class: "muted" }, ` block ${fmt(a.block_number)}`)]
          : badge("not yet", "no");
      return h("tr", { "data-model": m.hash },
        h("td", {}, h("strong", {}, `${m.name}:${m.version}`)),
        h("td", {}, m.task_type),
        h("td", {}, h("span", { class: "mono", title: m.hash }, short(m.hash, 24))),
        h("td", { class: "num" }, m.size ? fmt(m.size) : "–"),
        h("td", {}, anchor));
    });
    return [h("div", { class: "card" }, h("h2", {}, "Models"),
      table(["model", "task type", "sha256 (its id)", "#bytes", "on-chain anchor"], rows,
        "No model published yet: `coopgrid train digits` publishes one."))];
  },
};

async function downloadOutput(job) {
  const status = $("#status");
  try {
    const r = await api(`/v1/jobs/${encodeURIComponent(job.id)}/output`, { raw: true });
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `${job.id.slice(0, 16)}.parquet` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = `downloaded the output of ${job.name} (${fmt(blob.size)} bytes)`;
  } catch (e) {
    status.textContent = `download failed: ${e.message}`;
  }
}

// -- routing and polling -------------------------------------------------------------

function route() {
  const parts = (location.hash || "#/jobs").replace(/^#\/?/, "").split("/");
  const tab = parts[0] || "jobs";
  if (tab === "jobs" && parts[1]) return { tab, view: "job", arg: parts[1] };
  if (tab === "epochs" && parts[1]) return { tab, view: "epoch", arg: parts[1] };
  return { tab, view: views[tab] ? tab : "jobs" };
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.token) return;
  if (document.hidden) { // nobody is looking: ask again when the tab is shown
    state.timer = setTimeout(refresh, POLL_MS);
    return;
  }
  const seq = ++state.seq; // a slower answer to an older poll never replaces a newer view
  const r = route();
  const status = $("#status");
  try {
    const [grid, nodes] = await Promise.all([api("/v1/grid"), views[r.view](r.arg)]);
    if (seq !== state.seq) return;
    state.me = grid.you;
    overview(grid);
    showApp();
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === r.tab);
    // keep the scroll position: the view is rebuilt on every poll
    const y = window.scrollY;
    $("#view").replaceChildren(...nodes);
    window.scrollTo(0, y);
    status.classList.remove("error");
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (seq !== state.seq) return;
    if (e.status === 401) {
      logout("That token was not accepted: " + e.message);
      return;
    }
    status.classList.add("error");
    status.textContent = `could not update: ${e.message}`;
    if (e.status === 404) $("#view").replaceChildren(h("div", { class: "card" }, h("p", {}, e.message)));
  }
  state.timer = setTimeout(refresh, POLL_SLOW[r.view] || POLL_MS);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("#token").value.trim();
    try {
      await login(token);
      $("#token").value = "";
      refresh();
    } catch (e) {
      state.token = null;
      $("#login-error").textContent = e.status === 401 ? "That token was not accepted." : `Could not log in: ${e.message}`;
    }
  });
  $("#logout").addEventListener("click", () => logout(""));
  window.addEventListener("hashchange", () => { window.scrollTo(0, 0); refresh(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  try {
    const info = await api("/v1/info");
    state.leaseSeconds = info.lease_seconds;
  } catch (e) { /* the page still works; workers' state uses 60 s */ }
  if (state.token) refresh();
  else showLogin("");
});
