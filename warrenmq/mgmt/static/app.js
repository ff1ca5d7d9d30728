// The console: hash routes -> views, every view built from the HTTP API with DOM calls
// (user data is never parsed as HTML). Lists are paged, sorted and filtered on the server.
(function () {
  "use strict";

  // -- plumbing ------------------------------------------------------------------------------
  const state = { auth: sessionStorage.getItem("warren.auth"), user: null, timer: null,
    overview: null, vhosts: [] };
  const $ = (sel, root) => (root || document).querySelector(sel);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "style") el.setAttribute("style", v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.reason || body.error)) || ("HTTP " + status));
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Basic " + state.auth } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    const resp = await fetch("api" + path, init);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (resp.status === 401 && path !== "/whoami") { logout(); throw new ApiError(401, data); }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
  const get = (p) => api("GET", p);
  const enc = encodeURIComponent;

  function flash(text, isError) {
    const el = $("#flash");
    el.textContent = text;
    el.className = "flash" + (isError ? " err" : "");
    clearTimeout(flash.t);
    flash.t = setTimeout(() => el.classList.add("hidden"), isError ? 6000 : 3000);
  }

  async function act(fn, okText) {
    try {
      const r = await fn();
      if (okText) flash(okText);
      return r;
    } catch (e) {
      flash(e.message, true);
      throw e;
    }
  }

  const fmtNum = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
  const fmtRate = (d) => (d && typeof d.rate === "number" ? d.rate.toFixed(1) + "/s" : "0.0/s");
  function fmtBytes(b) {
    if (b === undefined || b === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + u[i];
  }
  function fmtUptime(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s %= 86400;
    const hh = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60);
    return (d ? d + "d " : "") + (hh || d ? hh + "h " : "") + m + "m " + (s % 60) + "s";
  }
  const yes = (b) => (b ? h("span", { class: "badge" }, "yes") : h("span", { class: "badge gray" }, "no"));

  function every(ms, fn) {
    clearInterval(state.timer);
    fn();
    state.timer = setInterval(() => { if (!document.hidden) fn(); }, ms);
  }

  // -- login ---------------------------------------------------------------------------------
  async function login(user, password) {
    state.auth = btoa(unescape(encodeURIComponent(user + ":" + password)));
    const resp = await fetch("api/whoami", { headers: { Authorization: "Basic " + state.auth } });
    if (!resp.ok) {
      state.auth = null;
      const body = await resp.json().catch(() => ({}));
      throw new Error(resp.status === 401 ? "Login failed: " + (body.reason || "not authorised")
        : "Login failed (HTTP " + resp.status + ")");
    }
    state.user = await resp.json();
    sessionStorage.setItem("warren.auth", state.auth);
  }

  function logout() {
    sessionStorage.removeItem("warren.auth");
    state.auth = null;
    clearInterval(state.timer);
    showLogin();
  }

  function showLogin() {
    $("#shell").classList.add("hidden");
    $("#login").classList.remove("hidden");
    $("#login-username").focus();
  }

  async function start() {
    $("#login").classList.add("hidden");
    $("#shell").classList.remove("hidden");
    $("#who-name").textContent = state.user.name + " (" + (state.user.tags.join(", ") || "no tags") + ")";
    try {
      const o = await get("/overview");
      state.overview = o;
      $("#node-name").textContent = o.node || o.cluster_name;
      $("#version").textContent = o.product_version;
    } catch (e) { /* shown by the views */ }
    await loadVhosts();
    route();
  }

  async function loadVhosts() {
    try { state.vhosts = (await get("/vhosts?columns=name")).map((v) => v.name); }
    catch (e) { state.vhosts = ["/"]; }
  }

  // -- router --------------------------------------------------------------------------------
  const routes = [];
  const on = (re, view) => routes.push([re, view]);

  function route() {
    if (!state.auth) return showLogin();
    clearInterval(state.timer);
    const hash = location.hash.replace(/^#/, "") || "/overview";
    for (const [re, view] of routes) {
      const m = hash.match(re);
      if (m) {
        const tab = hash.split("/")[1];
        document.querySelectorAll("#nav a").forEach((a) =>
          a.classList.toggle("active", a.dataset.tab === tab));
        const main = $("#main");
        main.replaceChildren();
        view(main, ...m.slice(1).map(decodeURIComponent));
        return;
      }
    }
    location.hash = "#/overview";
  }

  // -- a paged, sorted, filtered table backed by a list endpoint --------------------------------
  function pagedTable(root, opts) {
    const st = { page: 1, size: 50, sort: opts.sort || "name", rev: false, filter: "", regex: false };
    const filter = h("input", { type: "search", placeholder: "Filter by name", "aria-label": "filter",
      oninput: () => { st.filter = filter.value; st.page = 1; load(); } });
    const regex = h("input", { type: "checkbox", onchange: () => { st.regex = regex.checked; load(); } });
    const info = h("span", { class: "muted" });
    const body = h("tbody");
    const head = h("tr", {}, opts.columns.map((c) => {
      const th = h("th", { class: (c.sort ? "sortable " : "") + (c.num ? "num" : "") }, c.title);
      if (c.sort) th.addEventListener("click", () => {
        st.rev = st.sort === c.sort ? !st.rev : false;
        st.sort = c.sort;
        load();
      });
      th.dataset.sort = c.sort || "";
      return th;
    }));
    const prev = h("button", { class: "small", onclick: () => { st.page--; load(); } }, "‹ Prev");
    const next = h("button", { class: "small", onclick: () => { st.page++; load(); } }, "Next ›");
    const size = h("select", { onchange: () => { st.size = +size.value; st.page = 1; load(); } },
      [20, 50, 100, 500].map((n) => h("option", { value: n, selected: n === st.size }, n + " per page")));
    root.append(
      h("div", { class: "toolbar" }, filter, h("label", { class: "muted" }, regex, " regex"),
        h("span", { class: "grow" }), info),
      h("table", { class: "data" }, h("thead", {}, head), body),
      h("div", { class: "pager" }, size, prev, h("span", { class: "page-no" }), next));

    async function load() {
      const q = new URLSearchParams({ page: st.page, page_size: st.size, sort: st.sort,
        sort_reverse: st.rev, name: st.filter, use_regex: st.regex });
      let data;
      try { data = await get(opts.path + "?" + q); }
      catch (e) { body.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: opts.columns.length }, e.message))); return; }
      if (data.page_count && st.page > data.page_count) { st.page = data.page_count; return load(); }
      head.querySelectorAll("th").forEach((th) => {
        th.classList.toggle("sorted", th.dataset.sort === st.sort);
        th.classList.toggle("rev", th.dataset.sort === st.sort && st.rev);
      });
      body.replaceChildren(...(data.items.length ? data.items.map((item) =>
        h("tr", {}, opts.columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.cell(item))))) :
        [h("tr", {}, h("td", { class: "empty", colspan: opts.columns.length }, opts.empty || "Nothing here yet."))]));
      info.textContent = data.filtered_count === data.total_count
        ? fmtNum(data.total_count) + " total"
        : fmtNum(data.filtered_count) + " of " + fmtNum(data.total_count) + " match";
      root.querySelector(".page-no").textContent = "Page " + data.page + " of " + data.page_count;
      prev.disabled = data.page <= 1;
      next.disabled = data.page >= data.page_count;
    }
    return load;
  }

  function vhostSelect(name, selected) {
    return h("select", { name }, state.vhosts.map((v) => h("option", { value: v, selected: v === selected }, v)));
  }

  function formData(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      out[el.name] = el.type === "checkbox" ? el.checked : el.value;
    }
    return out;
  }

  function parseArgs(text) {
    if (!text.trim()) return {};
    const v = JSON.parse(text);
    if (typeof v !== "object" || Array.isArray(v)) throw new Error("arguments must be a JSON object");
    return v;
  }

  // -- overview --------------------------------------------------------------------------------
  const RATE_SERIES = [["publish", "Published", "#0f766e"], ["deliver_get", "Delivered", "#2563eb"],
    ["ack", "Acknowledged", "#d97706"]];
  const LENGTH_SERIES = [["messages_ready", "Ready", "#7c3aed"], ["messages_unacknowledged", "Unacked", "#db2777"]];

  function rateSeries(stats, key) {
    const samples = ((stats[key + "_details"] || {}).samples || []).slice().reverse();
    const pts = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].timestamp - samples[i - 1].timestamp) / 1000;
      if (dt > 0) pts.push([samples[i].timestamp, Math.max(samples[i].sample - samples[i - 1].sample, 0) / dt]);
    }
    return pts;
  }

  function chartCard(title, id, series) {
    return h("div", { class: "card chart-card" }, h("h2", {}, title), h("canvas", { id }),
      h("div", { class: "legend", id: id + "-legend" },
        series.map(([k, label, color]) => h("span", { style: "--c:" + color, "data-key": k }, label, h("b", {}, "–")))));
  }

  on(/^\/overview$/, (main) => {
    const totals = h("div", { class: "grid grid-5" });
    const nodes = h("div", {});
    main.append(h("h1", {}, "Overview"), totals,
      h("div", { class: "grid grid-2" },
        chartCard("Message rates (per second)", "chart-rates", RATE_SERIES),
        chartCard("Queued messages", "chart-lengths", LENGTH_SERIES)),
      nodes);
    every(2000, async () => {
      let o;
      try { o = await get("/overview?msg_rates_age=180&msg_rates_incr=2&lengths_age=180&lengths_incr=2"); }
      catch (e) { return; }
      if (!totals.isConnected) return; // the user left the page while the answer was on its way
      const ot = o.object_totals;
      totals.replaceChildren(...[["Connections", ot.connections], ["Channels", ot.channels],
        ["Exchanges", ot.exchanges], ["Queues", ot.queues], ["Consumers", ot.consumers]].map(([l, v]) =>
        h("div", { class: "stat" }, h("div", { class: "label" }, l), h("div", { class: "value" }, fmtNum(v)))));
      const ms = o.message_stats || {};
      drawChart($("#chart-rates"), RATE_SERIES.map(([k, label, color]) => ({ label, color, points: rateSeries(ms, k) })));
      const qt = o.queue_totals || {};
      drawChart($("#chart-lengths"), LENGTH_SERIES.map(([k, label, color]) => ({ label, color,
        points: ((qt[k + "_details"] || {}).samples || []).map((s) => [s.timestamp, s.sample]) })));
      RATE_SERIES.forEach(([k]) => { const b = $(`#chart-rates-legend [data-key="${k}"] b`); if (b) b.textContent = fmtRate(ms[k + "_details"]); });
      LENGTH_SERIES.forEach(([k]) => { const b = $(`#chart-lengths-legend [data-key="${k}"] b`); if (b) b.textContent = fmtNum(qt[k]); });
      if (state.user.tags.some((t) => t === "administrator" || t === "monitoring")) {
        try { renderNodes(nodes, await get("/nodes")); } catch (e) { /* keep the last */ }
      }
    });
  });

  function meter(label, used, limit, alarm, fmt) {
    const pct = limit ? Math.min(100, (used / limit) * 100) : 0;
    return h("div", { class: "meter" }, h("div", { class: "muted" }, label, ": ", h("b", {}, fmt(used)), " / ", fmt(limit),
      alarm ? h("span", { class: "badge red", style: "margin-left:8px" }, "alarm") : null),
    h("div", { class: "bar" + (alarm ? " alarm" : "") }, h("i", { style: "width:" + pct.toFixed(1) + "%" })));
  }

  function renderNodes(root, nodes) {
    root.replaceChildren(h("h2", {}, "Nodes"), h("div", { class: "grid grid-2" }, nodes.map((n) =>
      h("div", { class: "card node-card" },
        h("h2", {}, n.name, " ", h("span", { class: "badge" }, n.running ? "running" : "down")),
        h("div", { class: "grid", style: "gap:12px" },
          meter("Memory", n.mem_used, n.mem_limit, n.mem_alarm, fmtBytes),
          h("div", { class: "meter" }, h("div", { class: "muted" }, "Disk free: ", h("b", {}, fmtBytes(n.disk_free)),
            " (limit ", fmtBytes(n.disk_free_limit), ")", n.disk_free_alarm ? h("span", { class: "badge red", style: "margin-left:8px" }, "alarm") : null)),
          meter("File descriptors", n.fd_used, n.fd_total, false, fmtNum)),
        h("dl", { class: "kv", style: "margin-top:14px" },
          h("dt", {}, "Uptime"), h("dd", {}, fmtUptime(n.uptime)),
          h("dt", {}, "Cluster"), h("dd", {}, [n.name].concat((n.cluster_links || []).map((l) => l.name)).join(", ")),
          h("dt", {}, "Alarms"), h("dd", {}, n.mem_alarm || n.disk_free_alarm ? h("span", { class: "badge red" }, "in effect") : h("span", { class: "badge" }, "none")),
          h("dt", {}, "Plugins"), h("dd", {}, (n.enabled_plugins || []).join(", ")),
          h("dt", {}, "Processors"), h("dd", {}, n.processors))))));
  }

  // -- connections and channels ----------------------------------------------------------------
  on(/^\/connections$/, (main) => {
    const wrap = h("div", { class: "card" });
    main.append(h("h1", {}, "Connections"), wrap);
    const load = pagedTable(wrap, { path: "/connections", empty: "No client is connected.", columns: [
      { title: "Name", sort: "name", cell: (c) => c.name },
      { title: "User", sort: "user", cell: (c) => c.user },
      { title: "Virtual host", sort: "vhost", cell: (c) => c.vhost },
      { title: "State", cell: (c) => h("span", { class: c.state === "running" ? "badge" : "badge red" }, c.state) },
      { title: "Channels", sort: "channels", num: true, cell: (c) => fmtNum(c.channels) },
      { title: "Client", cell: (c) => ((c.client_properties || {}).product || "") + " " + ((c.client_properties || {}).version || "") },
      { title: "Received", num: true, cell: (c) => fmtBytes(c.recv_oct) + " · " + fmtRate({ rate: c.recv_oct_details.rate / 1024 }).replace("/s", " KiB/s") },
      { title: "", cell: (c) => h("button", { class: "small danger", onclick: () => act(() => api("DELETE", "/connections/" + enc(c.name)), "Connection closed").then(load) }, "Close") }] });
    every(5000, load);
  });

  on(/^\/channels$/, (main) => {
    const wrap = h("div", { class: "card" });
    main.append(h("h1", {}, "Channels"), wrap);
    const load = pagedTable(wrap, { path: "/channels", empty: "No channel is open.", columns: [
      { title: "Channel", sort: "name", cell: (c) => c.name },
      { title: "User", sort: "user", cell: (c) => c.user },
      { title: "Virtual host", sort: "vhost", cell: (c) => c.vhost },
      { title: "Mode", cell: (c) => (c.confirm ? "confirm" : "") + (c.transactional ? "tx" : "") || "–" },
      { title: "Prefetch", sort: "prefetch_count", num: true, cell: (c) => c.prefetch_count || c.global_prefetch_count || "∞" },
      { title: "Consumers", sort: "consumer_count", num: true, cell: (c) => fmtNum(c.consumer_count) },
      { title: "Unacked", sort: "messages_unacknowledged", num: true, cell: (c) => fmtNum(c.messages_unacknowledged) },
      { title: "Unconfirmed", num: true, cell: (c) => fmtNum(c.messages_unconfirmed) }] });
    every(5000, load);
  });

  // -- exchanges -------------------------------------------------------------------------------
  const xname = (n) => n || "(AMQP default)";
  const xpath = (v, n) => enc(v) + "/" + enc(n || "amq.default");

  on(/^\/exchanges$/, (main) => {
    const wrap = h("div", { class: "card" });
    const add = h("form", { class: "inline", id: "add-exchange" },
      h("label", {}, "Virtual host", vhostSelect("vhost", "/")),
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "Type", h("select", { name: "type" }, ["direct", "fanout", "topic", "headers"].map((t) => h("option", {}, t)))),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "durable", checked: true }), "Durable"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "auto_delete" }), "Auto delete"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "internal" }), "Internal"),
      h("label", { class: "wide" }, "Arguments (JSON)", h("textarea", { name: "arguments", placeholder: '{"alternate-exchange": "unrouted"}' })),
      h("div", {}, h("button", { class: "primary", type: "submit" }, "Add exchange")));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(add);
      await act(() => api("PUT", "/exchanges/" + enc(f.vhost) + "/" + enc(f.name), { type: f.type,
        durable: f.durable, auto_delete: f.auto_delete, internal: f.internal, arguments: parseArgs(f.arguments) }), "Exchange declared");
      add.reset(); load();
    });
    main.append(h("h1", {}, "Exchanges"), wrap, h("details", { class: "card" }, h("summary", {}, "Add a new exchange"), add));
    const load = pagedTable(wrap, { path: "/exchanges", columns: [
      { title: "Virtual host", sort: "vhost", cell: (x) => x.vhost },
      { title: "Name", sort: "name", cell: (x) => h("a", { href: "#/exchanges/" + xpath(x.vhost, x.name) }, xname(x.name)) },
      { title: "Type", sort: "type", cell: (x) => x.type },
      { title: "Features", cell: (x) => [x.durable ? "D" : "", x.auto_delete ? "AD" : "", x.internal ? "I" : ""].filter(Boolean).join(" ") },
      { title: "Policy", cell: (x) => x.policy || "" }] });
    every(10000, load);
  });

  function publishForm(vhost, exchange, defaultKey) {
    const form = h("form", { class: "inline publish-form" },
      h("label", {}, "Routing key", h("input", { name: "routing_key", value: defaultKey || "" })),
      h("label", {}, "Delivery mode", h("select", { name: "delivery_mode" }, h("option", { value: "1" }, "1 - non-persistent"), h("option", { value: "2" }, "2 - persistent"))),
      h("label", { class: "wide" }, "Headers (JSON)", h("textarea", { name: "headers", placeholder: '{"x-trace": "42"}', style: "min-height:40px" })),
      h("label", { class: "wide" }, "Payload", h("textarea", { name: "payload" })),
      h("div", {}, h("button", { class: "primary", type: "submit" }, "Publish message")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(form);
      const props = { delivery_mode: +f.delivery_mode };
      if (f.headers.trim()) props.headers = parseArgs(f.headers);
      const r = await act(() => api("POST", "/exchanges/" + xpath(vhost, exchange) + "/publish",
        { properties: props, routing_key: f.routing_key, payload: f.payload, payload_encoding: "string" }));
      flash(r.routed ? "Message published." : "Message published, but not routed to any queue.", !r.routed);
    });
    return form;
  }

  function bindingTable(items, own, onDelete) {
    if (!items.length) return h("p", { class: "muted" }, "No bindings.");
    return h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", {}, own === "source" ? "To" : "From"), h("th", {}, "Routing key"), h("th", {}, "Arguments"), h("th", {}))),
      h("tbody", {}, items.map((b) => h("tr", {},
        h("td", {}, own === "source" ? b.destination_type + " " + b.destination : xname(b.source)),
        h("td", {}, b.routing_key), h("td", {}, JSON.stringify(b.arguments)),
        h("td", {}, b.source ? h("button", { class: "small danger", onclick: () => onDelete(b) }, "Unbind") : "")))));
  }

  async function unbind(b) {
    const kind = b.destination_type === "queue" ? "q" : "e";
    await act(() => api("DELETE", "/bindings/" + enc(b.vhost) + "/e/" + enc(b.source) + "/" + kind + "/" + enc(b.destination) + "/" + enc(b.properties_key)), "Binding removed");
    route();
  }

  on(/^\/exchanges\/([^/]+)\/([^/]+)$/, async (main, vhost, name) => {
    let x;
    try { x = await get("/exchanges/" + xpath(vhost, name)); }
    catch (e) { main.append(h("h1", {}, "Exchange"), h("div", { class: "card" }, e.message)); return; }
    const real = x.name;
    const bindings = await get("/exchanges/" + xpath(vhost, name) + "/bindings/source").catch(() => []);
    main.append(h("h1", {}, "Exchange ", xname(real), h("span", { class: "sub" }, "in " + vhost)),
      h("div", { class: "grid grid-2" },
        h("div", { class: "card" }, h("h2", {}, "Details"), h("dl", { class: "kv" },
          h("dt", {}, "Type"), h("dd", {}, x.type), h("dt", {}, "Durable"), h("dd", {}, yes(x.durable)),
          h("dt", {}, "Auto delete"), h("dd", {}, yes(x.auto_delete)), h("dt", {}, "Internal"), h("dd", {}, yes(x.internal)),
          h("dt", {}, "Policy"), h("dd", {}, x.policy || "–"), h("dt", {}, "Arguments"), h("dd", {}, JSON.stringify(x.arguments)))),
        h("div", { class: "card" }, h("h2", {}, "Bindings from this exchange"), bindingTable(bindings, "source", unbind))),
      h("div", { class: "card" }, h("h2", {}, "Publish message"), publishForm(vhost, real, "")),
      real && !real.startsWith("amq.") ? h("div", { class: "card" }, h("h2", {}, "Delete this exchange"),
        h("button", { class: "danger", onclick: async () => {
          if (!confirm("Delete exchange " + real + "?")) return;
          await act(() => api("DELETE", "/exchanges/" + xpath(vhost, real)), "Exchange deleted");
          location.hash = "#/exchanges";
        } }, "Delete")) : null);
  });

  // -- queues ----------------------------------------------------------------------------------
  on(/^\/queues$/, (main) => {
    const wrap = h("div", { class: "card" });
    const add = h("form", { class: "inline", id: "add-queue" },
      h("label", {}, "Virtual host", vhostSelect("vhost", "/")),
      h("label", {}, "Name", h("input", { name: "name", required: true, id: "add-queue-name" })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "durable", checked: true }), "Durable"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "auto_delete" }), "Auto delete"),
      h("label", { class: "wide" }, "Arguments (JSON)", h("textarea", { name: "arguments", placeholder: '{"x-message-ttl": 60000, "x-max-length": 10000}' })),
      h("div", {}, h("button", { class: "primary", type: "submit", id: "add-queue-submit" }, "Add queue")));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(add);
      await act(() => api("PUT", "/queues/" + enc(f.vhost) + "/" + enc(f.name),
        { durable: f.durable, auto_delete: f.auto_delete, arguments: parseArgs(f.arguments) }), "Queue declared");
      add.reset(); load();
    });
    main.append(h("h1", {}, "Queues"), wrap, h("details", { class: "card", id: "add-queue-panel" }, h("summary", {}, "Add a new queue"), add));
    const load = pagedTable(wrap, { path: "/queues", empty: "No queues yet.", columns: [
      { title: "Virtual host", sort: "vhost", cell: (q) => q.vhost },
      { title: "Name", sort: "name", cell: (q) => h("a", { href: "#/queues/" + enc(q.vhost) + "/" + enc(q.name) }, q.name) },
      { title: "Type", sort: "type", cell: (q) => q.type },
      { title: "Node", cell: (q) => [q.node, q.members && q.members.length > 1 ? h("span", { class: "badge gray", title: q.members.join(", ") }, " +" + (q.members.length - 1)) : ""] },
      { title: "Features", cell: (q) => [q.durable ? "D" : "", q.auto_delete ? "AD" : "", q.exclusive ? "Excl" : "", q.policy ? "Pol" : ""].filter(Boolean).join(" ") },
      { title: "State", cell: (q) => h("span", { class: "badge" }, q.state) },
      { title: "Ready", sort: "messages_ready", num: true, cell: (q) => fmtNum(q.messages_ready) },
      { title: "Unacked", sort: "messages_unacknowledged", num: true, cell: (q) => fmtNum(q.messages_unacknowledged) },
      { title: "Total", sort: "messages", num: true, cell: (q) => fmtNum(q.messages) },
      { title: "Consumers", sort: "consumers", num: true, cell: (q) => fmtNum(q.consumers) },
      { title: "In", num: true, cell: (q) => fmtRate((q.message_stats || {}).publish_details) },
      { title: "Out", num: true, cell: (q) => fmtRate((q.message_stats || {}).deliver_get_details) }] });
    every(5000, load);
  });

  function messageCard(m, i) {
    return h("div", { class: "card message" },
      h("div", {}, h("b", {}, "Message " + (i + 1)), " ", h("span", { class: "muted" },
        "routing key " + JSON.stringify(m.routing_key) + " · exchange " + xname(m.exchange) + " · " + m.payload_bytes + " bytes" + (m.redelivered ? " · redelivered" : "") + " · " + m.message_count + " left")),
      Object.keys(m.properties || {}).length ? h("div", { class: "muted", style: "margin-top:4px" }, "properties " + JSON.stringify(m.properties)) : null,
      h("pre", { class: "msg" }, m.payload_encoding === "base64" ? "(base64) " + m.payload : m.payload));
  }

  // A replicated queue's members, each marked as the leader, offline, or (classic queues
  // mirrored by policy) not synchronised; a queue that is not replicated names its node.
  function replicaRows(q) {
    if (!q.members) return [h("dt", {}, "Node"), h("dd", { id: "q-node" }, q.node, h("span", { class: "muted" }, " (not replicated)"))];
    const online = new Set(q.online || []);
    const synced = q.synchronised_slave_nodes ? new Set(q.synchronised_slave_nodes) : null;
    const member = (m) => {
      const notes = [];
      if (m === q.leader) notes.push("leader");
      if (!online.has(m)) notes.push("offline");
      else if (synced && m !== q.leader && !synced.has(m)) notes.push("not synchronised");
      const cls = m === q.leader ? "badge" : notes.length ? "badge red" : "badge gray";
      return h("li", { "data-node": m }, m, " ", notes.length ? h("span", { class: cls }, notes.join(", ")) : h("span", { class: cls }, "in sync"));
    };
    return [
      h("dt", {}, "Leader"), h("dd", { id: "q-leader" }, q.leader || h("span", { class: "badge red" }, "no leader reachable")),
      h("dt", {}, "Members"), h("dd", {}, h("ul", { id: "q-members", class: "plain" }, q.members.map(member))),
      h("dt", {}, "Online"), h("dd", { id: "q-online" }, (q.online || []).length + " of " + q.members.length)];
  }

  on(/^\/queues\/([^/]+)\/([^/]+)$/, (main, vhost, name) => {
    const path = "/queues/" + enc(vhost) + "/" + enc(name);
    const details = h("div", { class: "card" });
    const consumers = h("div", { class: "card" });
    const bindings = h("div", { class: "card" });
    const results = h("div", { class: "msg-list", id: "get-results" });
    const getForm = h("form", { class: "inline", id: "get-form" },
      h("label", {}, "Ack mode", h("select", { name: "ackmode" },
        h("option", { value: "ack_requeue_true" }, "Nack, requeue"), h("option", { value: "ack_requeue_false" }, "Ack, remove from queue"),
        h("option", { value: "reject_requeue_true" }, "Reject, requeue"), h("option", { value: "reject_requeue_false" }, "Reject, drop"))),
      h("label", {}, "Encoding", h("select", { name: "encoding" }, h("option", { value: "auto" }, "auto (string if UTF-8)"), h("option", { value: "base64" }, "base64"))),
      h("label", {}, "Messages", h("input", { name: "count", type: "number", value: "1", min: "1" })),
      h("div", {}, h("button", { class: "primary", type: "submit" }, "Get messages")));
    getForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(getForm);
      const msgs = await act(() => api("POST", path + "/get", { count: +f.count, ackmode: f.ackmode, encoding: f.encoding, truncate: 50000 }));
      results.replaceChildren(...(msgs.length ? msgs.map(messageCard) : [h("p", { class: "muted" }, "Queue is empty.")]));
      refresh();
    });
    const bindForm = h("form", { class: "inline" },
      h("label", {}, "From exchange", h("input", { name: "source", required: true })),
      h("label", {}, "Routing key", h("input", { name: "routing_key" })),
      h("label", {}, "Arguments (JSON)", h("input", { name: "arguments" })),
      h("div", {}, h("button", { type: "submit" }, "Bind")));
    bindForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(bindForm);
      await act(() => api("POST", "/bindings/" + enc(vhost) + "/e/" + enc(f.source) + "/q/" + enc(name),
        { routing_key: f.routing_key, arguments: parseArgs(f.arguments) }), "Binding added");
      bindForm.reset(); refresh();
    });
    main.append(h("h1", {}, "Queue ", name, h("span", { class: "sub" }, "in " + vhost)),
      h("div", { class: "grid grid-2" }, details, h("div", {}, consumers, bindings)),
      h("div", { class: "card" }, h("h2", {}, "Bind to an exchange"), bindForm),
      h("div", { class: "card" }, h("h2", {}, "Publish message"), h("p", { class: "muted" }, "Through the default exchange, routed to this queue."), publishForm(vhost, "", name)),
      h("div", { class: "card" }, h("h2", {}, "Get messages"), h("p", { class: "muted" }, "Getting messages is a destructive action with the ack and reject-drop modes."), getForm, results),
      h("div", { class: "card" }, h("h2", {}, "Purge and delete"), h("div", { class: "toolbar" },
        h("button", { class: "danger", id: "purge", onclick: async () => {
          if (!confirm("Purge every ready message of " + name + "?")) return;
          await act(() => api("DELETE", path + "/contents"), "Queue purged"); refresh();
        } }, "Purge messages"),
        h("button", { class: "danger", onclick: async () => {
          if (!confirm("Delete queue " + name + "?")) return;
          await act(() => api("DELETE", path), "Queue deleted"); location.hash = "#/queues";
        } }, "Delete queue"))));

    async function refresh() {
      let q;
      try { q = await get(path); } catch (e) { details.replaceChildren(h("h2", {}, "Details"), e.message); return; }
      const ms = q.message_stats || {};
      details.replaceChildren(h("h2", {}, "Details"), h("dl", { class: "kv", id: "queue-details" },
        h("dt", {}, "Type"), h("dd", {}, q.type), h("dt", {}, "State"), h("dd", {}, h("span", { class: "badge" }, q.state)),
        h("dt", {}, "Durable"), h("dd", {}, yes(q.durable)), h("dt", {}, "Auto delete"), h("dd", {}, yes(q.auto_delete)),
        h("dt", {}, "Exclusive"), h("dd", {}, yes(q.exclusive)),
        h("dt", {}, "Policy"), h("dd", {}, q.policy || "–"), h("dt", {}, "Arguments"), h("dd", {}, JSON.stringify(q.arguments)),
        h("dt", {}, "Ready"), h("dd", { id: "q-ready" }, fmtNum(q.messages_ready)),
        h("dt", {}, "Unacked"), h("dd", {}, fmtNum(q.messages_unacknowledged)),
        h("dt", {}, "Total"), h("dd", { id: "q-total" }, fmtNum(q.messages)),
        h("dt", {}, "Ready bytes"), h("dd", {}, fmtBytes(q.message_bytes_ready)),
        h("dt", {}, "Publish"), h("dd", {}, fmtRate(ms.publish_details), " (", fmtNum(ms.publish), " total)"),
        h("dt", {}, "Deliver / get"), h("dd", {}, fmtRate(ms.deliver_get_details), " (", fmtNum(ms.deliver_get), " total)"),
        h("dt", {}, "Ack"), h("dd", {}, fmtRate(ms.ack_details), " (", fmtNum(ms.ack), " total)"),
        ...replicaRows(q)));
      consumers.replaceChildren(h("h2", {}, "Consumers (" + q.consumers + ")"), q.consumer_details.length
        ? h("table", { class: "data" }, h("thead", {}, h("tr", {}, h("th", {}, "Channel"), h("th", {}, "Tag"), h("th", {}, "Ack required"), h("th", { class: "num" }, "Prefetch"))),
          h("tbody", {}, q.consumer_details.map((c) => h("tr", {}, h("td", {}, c.channel_details.name), h("td", {}, c.consumer_tag), h("td", {}, yes(c.ack_required)), h("td", { class: "num" }, c.prefetch_count || "∞")))))
        : h("p", { class: "muted" }, "No consumers."));
      const bs = await get(path + "/bindings").catch(() => []);
      bindings.replaceChildren(h("h2", {}, "Bindings"), bindingTable(bs, "destination", unbind));
    }
    every(5000, refresh);
  });

  // -- admin: users, vhosts, policies, definitions ---------------------------------------------
  function adminTabs(main, active) {
    main.append(h("h1", {}, "Admin"), h("div", { class: "toolbar admin-tabs" },
      [["users", "Users"], ["vhosts", "Virtual hosts"], ["policies", "Policies"], ["definitions", "Definitions"]].map(([k, label]) =>
        h("a", { href: "#/admin/" + k, class: k === active ? "badge" : "badge gray" }, label))));
  }

  on(/^\/admin\/users$/, async (main) => {
    adminTabs(main, "users");
    const list = h("div", { class: "card" });
    const add = h("form", { class: "inline", id: "add-user" },
      h("label", {}, "Username", h("input", { name: "name", required: true, id: "add-user-name" })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", id: "add-user-password" })),
      h("label", {}, "Tags (comma-separated)", h("input", { name: "tags", placeholder: "administrator, monitoring, policymaker, management", id: "add-user-tags" })),
      h("label", {}, "Full access to vhost", h("select", { name: "vhost" }, h("option", { value: "" }, "(none)"), state.vhosts.map((v) => h("option", { value: v }, v)))),
      h("div", {}, h("button", { class: "primary", type: "submit", id: "add-user-submit" }, "Add user")));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(add);
      await act(async () => {
        await api("PUT", "/users/" + enc(f.name), { password: f.password, tags: f.tags });
        if (f.vhost) await api("PUT", "/permissions/" + enc(f.vhost) + "/" + enc(f.name), { configure: ".*", write: ".*", read: ".*" });
      }, "User " + f.name + " added");
      add.reset(); load();
    });
    main.append(list, h("div", { class: "card" }, h("h2", {}, "Add a user"), add));
    async function load() {
      let users, perms;
      try { [users, perms] = await Promise.all([get("/users"), get("/permissions")]); }
      catch (e) { list.replaceChildren(h("p", { class: "error-text" }, e.message)); return; }
      list.replaceChildren(h("h2", {}, "Users"), h("table", { class: "data", id: "users-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Tags"), h("th", {}, "Can access virtual hosts"), h("th", {}))),
        h("tbody", {}, users.map((u) => h("tr", {}, h("td", {}, u.name),
          h("td", {}, u.tags.map((t) => h("span", { class: "badge", style: "margin-right:4px" }, t))),
          h("td", {}, perms.filter((p) => p.user === u.name).map((p) => p.vhost + " (" + [p.configure, p.write, p.read].join(" | ") + ")").join(", ") || h("span", { class: "muted" }, "no access")),
          h("td", {}, u.name === state.user.name ? "" : h("button", { class: "small danger", onclick: async () => {
            if (!confirm("Delete user " + u.name + "?")) return;
            await act(() => api("DELETE", "/users/" + enc(u.name)), "User deleted"); load();
          } }, "Delete")))))));
    }
    load();
  });

  on(/^\/admin\/vhosts$/, async (main) => {
    adminTabs(main, "vhosts");
    const list = h("div", { class: "card" });
    const add = h("form", { class: "inline" },
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "Description", h("input", { name: "description" })),
      h("div", {}, h("button", { class: "primary", type: "submit" }, "Add virtual host")));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(add);
      await act(() => api("PUT", "/vhosts/" + enc(f.name), { description: f.description }), "Virtual host added");
      add.reset(); await loadVhosts(); load();
    });
    main.append(list, h("div", { class: "card" }, h("h2", {}, "Add a virtual host"), add));
    const load = pagedTable(list, { path: "/vhosts", columns: [
      { title: "Name", sort: "name", cell: (v) => v.name },
      { title: "Description", cell: (v) => v.description },
      { title: "Ready", num: true, cell: (v) => fmtNum(v.messages_ready) },
      { title: "Unacked", num: true, cell: (v) => fmtNum(v.messages_unacknowledged) },
      { title: "", cell: (v) => h("button", { class: "small danger", onclick: async () => {
        if (!confirm("Delete virtual host " + v.name + " and everything in it?")) return;
        await act(() => api("DELETE", "/vhosts/" + enc(v.name)), "Virtual host deleted"); await loadVhosts(); load();
      } }, "Delete") }] });
    load();
  });

  on(/^\/admin\/policies$/, async (main) => {
    adminTabs(main, "policies");
    const list = h("div", { class: "card" });
    const add = h("form", { class: "inline" },
      h("label", {}, "Virtual host", vhostSelect("vhost", "/")),
      h("label", {}, "Name", h("input", { name: "name", required: true })),
      h("label", {}, "Pattern", h("input", { name: "pattern", required: true, placeholder: "^orders\\." })),
      h("label", {}, "Apply to", h("select", { name: "apply_to" }, ["all", "queues", "exchanges"].map((a) => h("option", {}, a)))),
      h("label", {}, "Priority", h("input", { name: "priority", type: "number", value: "0" })),
      h("label", { class: "wide" }, "Definition (JSON)", h("textarea", { name: "definition", required: true, placeholder: '{"max-length": 10000, "overflow": "reject-publish"}' })),
      h("div", {}, h("button", { class: "primary", type: "submit" }, "Add / update policy")));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = formData(add);
      await act(() => api("PUT", "/policies/" + enc(f.vhost) + "/" + enc(f.name),
        { pattern: f.pattern, "apply-to": f.apply_to, priority: +f.priority, definition: parseArgs(f.definition) }), "Policy set");
      load();
    });
    main.append(list, h("div", { class: "card" }, h("h2", {}, "Add or update a policy"), add));
    async function load() {
      let ps;
      try { ps = await get("/policies"); } catch (e) { list.replaceChildren(h("p", { class: "error-text" }, e.message)); return; }
      list.replaceChildren(h("h2", {}, "Policies"), ps.length ? h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["Virtual host", "Name", "Pattern", "Apply to", "Definition", "Priority", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ps.map((p) => h("tr", {}, h("td", {}, p.vhost), h("td", {}, p.name), h("td", {}, p.pattern), h("td", {}, p["apply-to"]),
          h("td", {}, JSON.stringify(p.definition)), h("td", {}, p.priority),
          h("td", {}, h("button", { class: "small danger", onclick: async () => {
            await act(() => api("DELETE", "/policies/" + enc(p.vhost) + "/" + enc(p.name)), "Policy cleared"); load();
          } }, "Clear")))))) : h("p", { class: "muted" }, "No policies."));
    }
    load();
  });

  on(/^\/admin\/definitions$/, async (main) => {
    adminTabs(main, "definitions");
    const file = h("input", { type: "file", accept: ".json,application/json", id: "definitions-file" });
    const text = h("textarea", { id: "definitions-text", placeholder: "…or paste a definitions document here", style: "min-height:140px" });
    main.append(
      h("div", { class: "card" }, h("h2", {}, "Export definitions"),
        h("p", { class: "muted" }, "Users, virtual hosts, permissions, policies, exchanges, queues and bindings as RabbitMQ's definitions JSON."),
        h("button", { class: "primary", id: "export-definitions", onclick: async () => {
          const doc = await act(() => get("/definitions"));
          const a = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" })), download: "warrenmq-definitions.json" });
          document.body.append(a); a.click(); a.remove();
        } }, "Download definitions")),
      h("div", { class: "card" }, h("h2", {}, "Import definitions"),
        h("p", { class: "muted" }, "A file exported from WarrenMQ or RabbitMQ. The whole document is validated before anything changes."),
        h("div", { class: "toolbar" }, file), text,
        h("div", { class: "toolbar", style: "margin-top:12px" }, h("button", { class: "primary", id: "import-definitions", onclick: async () => {
          const body = file.files.length ? await file.files[0].text() : text.value;
          if (!body.trim()) { flash("Choose a file or paste a document first.", true); return; }
          await act(() => api("POST", "/definitions", body), "Definitions imported");
          await loadVhosts();
        } }, "Upload and import"))));
  });

  // -- boot ------------------------------------------------------------------------------------
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      await login($("#login-username").value, $("#login-password").value);
      start();
    } catch (e) { $("#login-error").textContent = e.message; }
  });
  $("#logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  (async () => {
    if (!state.auth) return showLogin();
    const resp = await fetch("api/whoami", { headers: { Authorization: "Basic " + state.auth } });
    if (!resp.ok) return logout();
    state.user = await resp.json();
    start();
  })();
})();
