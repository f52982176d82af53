// Buzón dashboard: polls /api/stats every second and draws the last five minutes with uPlot,
// after the last hour from Prometheus when the server has one (BUZON_DASHBOARD_PROMETHEUS).
// No inline script anywhere (the Content-Security-Policy forbids it); state a test can read
// is mirrored on <body> as data-* attributes (points, nonzero charts, alerts, login, switch).
(function () {
  "use strict";

  var KEEP = 1200;  // an hour of Prometheus points (15 s apart) and the live seconds
  var state = { csrf: null, loggedIn: false, samples: [], charts: {}, nonzero: {},
                transform: { configured: false, enabled: false } };
  function $(id) { return document.getElementById(id); }

  var CHARTS = [
    { id: "chart-traffic", name: "traffic", series: [
      { label: "connections/s", stroke: "#2b6cb0", get: function (s) { return s.rates.connections; } },
      { label: "messages/s", stroke: "#1f7a3f", get: function (s) { return s.rates.messages; } },
      { label: "deliveries/s", stroke: "#b7791f", get: function (s) { return s.rates.deliveries; } }] },
    { id: "chart-bytes", name: "bytes", series: [
      { label: "bytes/s", stroke: "#6b46c1", get: function (s) { return s.rates.bytes; } }] },
    { id: "chart-queue", name: "queue", series: [
      { label: "depth", stroke: "#2b6cb0", get: function (s) { return s.queue_depth; } },
      { label: "oldest (s)", stroke: "#b42318", scale: "s", get: function (s) { return s.oldest_age; } }] },
    { id: "chart-delay", name: "delay", series: [
      { label: "p50 (s)", stroke: "#1f7a3f", get: function (s) { return s.delay_p50; } },
      { label: "p95 (s)", stroke: "#b42318", get: function (s) { return s.delay_p95; } }] }
  ];

  function width(el) { return Math.max(el.parentElement.clientWidth - 24, 300); }

  function makeCharts() {
    CHARTS.forEach(function (c) {
      var el = $(c.id);
      var axes = [{}, { size: 60, values: ticks }];
      if (c.series.some(function (s) { return s.scale; })) {
        axes.push({ scale: "s", side: 1, size: 60, grid: { show: false }, values: ticks });
      }
      var opts = {
        width: width(el), height: 200,
        scales: { x: { time: true } },
        series: [{}].concat(c.series.map(function (s) {
          return { label: s.label, stroke: s.stroke, width: 1.5, spanGaps: true,
                   scale: s.scale || "y" };
        })),
        axes: axes
      };
      state.charts[c.name] = new uPlot(opts, dataFor(c), el);
    });
    window.addEventListener("resize", function () {
      CHARTS.forEach(function (c) {
        state.charts[c.name].setSize({ width: width($(c.id)), height: 200 });
      });
    });
  }

  function dataFor(c) {
    var xs = state.samples.map(function (s) { return s.t; });
    return [xs].concat(c.series.map(function (ser) {
      return state.samples.map(function (s) {
        var v = ser.get(s);
        if (v > 0) { state.nonzero[c.name] = true; }
        return v === undefined ? null : v;
      });
    }));
  }

  function add(sample) {
    if (!sample) { return; }
    var last = state.samples[state.samples.length - 1];
    if (last && last.t >= sample.t) { return; }
    state.samples.push(sample);
    if (state.samples.length > KEEP) { state.samples.shift(); }
  }

  function fmt(n) {
    if (n === null || n === undefined) { return "–"; }
    if (n >= 1e9) { return (n / 1e9).toFixed(2) + " G"; }
    if (n >= 1e6) { return (n / 1e6).toFixed(2) + " M"; }
    if (n >= 1e4) { return (n / 1e3).toFixed(1) + " k"; }
    return String(Math.round(n * 1000) / 1000);
  }

  function ticks(u, values) { return values.map(fmt); }

  function text(el, value) { el.textContent = value; }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td");
      if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c; }
      tr.appendChild(td);
    });
    return tr;
  }

  function badge(label, cls) {
    var b = document.createElement("span");
    b.className = "badge " + cls;
    b.textContent = label;
    return b;
  }

  function render(alerts) {
    CHARTS.forEach(function (c) { state.charts[c.name].setData(dataFor(c)); });
    var s = state.samples[state.samples.length - 1];
    document.body.dataset.points = String(state.samples.length);
    document.body.dataset.nonzero = Object.keys(state.nonzero).sort().join(",");
    if (s) {
      text($("updated"), "updated " + new Date(s.t * 1000).toLocaleTimeString());
      var totals = $("totals");
      totals.replaceChildren();
      [["messages accepted", s.totals.messages], ["deliveries", s.totals.deliveries],
       ["connections", s.totals.connections], ["open now", s.connections_open],
       ["bytes", s.totals.bytes], ["refused", s.totals.refused],
       ["queue depth", s.queue_depth], ["disk free", s.disk_free_percent === null ? "–" : s.disk_free_percent + " %"],
       ["auth failures", s.auth_failures]].forEach(function (p) {
        var dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = p[0]; dd.textContent = typeof p[1] === "number" ? fmt(p[1]) : p[1];
        totals.appendChild(dt); totals.appendChild(dd);
      });
      state.transform = s.transform;
      var rows = $("stage-rows");
      rows.replaceChildren();
      s.stages.forEach(function (st) {
        var label = st.up === null ? ["no attempt yet", ""] : st.up ? ["up", "up"] : ["down", "down"];
        rows.appendChild(row([st.label, badge(label[0], label[1]),
          st.down_since ? new Date(st.down_since * 1000).toLocaleTimeString() : "",
          String(st.runs), st.duration_p50 === null ? "–" : fmt(st.duration_p50) + " s"]));
      });
      if (!s.stages.length) {
        rows.appendChild(row(["no transform configured", "", "", "", ""]));
      }
    }
    var t = state.transform;
    var tstate = $("transform-state");
    tstate.className = "badge " + (t.configured ? (t.enabled ? "on" : "off") : "");
    text(tstate, t.configured ? (t.enabled ? "on" : "off") : "not configured");
    document.body.dataset.transform = t.configured ? (t.enabled ? "on" : "off") : "none";
    var toggle = $("transform-toggle");
    toggle.disabled = !(state.loggedIn && t.configured);
    text(toggle, t.enabled ? "Switch off" : "Switch on");
    toggle.title = state.loggedIn ? "" : "log in to switch";
    if (alerts) {
      var list = $("alert-list");
      list.replaceChildren();
      alerts.forEach(function (a) {
        var li = document.createElement("li");
        li.dataset.kind = a.kind;
        li.textContent = a.text;
        list.appendChild(li);
      });
      $("alerts").hidden = alerts.length === 0;
      document.body.dataset.alerts = alerts.map(function (a) { return a.kind; }).join(",");
    }
    $("login").hidden = state.loggedIn;
    $("logged").hidden = !state.loggedIn;
    document.body.dataset.loggedIn = String(state.loggedIn);
  }

  function getJSON(path) {
    return fetch(path, { cache: "no-store", credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function postJSON(path, body) {
    var headers = { "Content-Type": "application/json" };
    if (state.csrf) { headers["X-CSRF-Token"] = state.csrf; }
    return fetch(path, { method: "POST", headers: headers, credentials: "same-origin",
                         body: JSON.stringify(body) }).then(function (r) {
      return r.json().then(function (data) { return { status: r.status, data: data }; });
    });
  }

  function session(data) {
    state.loggedIn = !!data.logged_in;
    state.csrf = data.logged_in ? data.csrf : null;
  }

  function poll() {
    getJSON("/api/stats").then(function (data) {
      add(data.sample);
      if (!data.logged_in && state.loggedIn) { session({ logged_in: false }); }
      render(data.alerts);
    }).catch(function (err) { text($("updated"), "no answer: " + err.message); });
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var message = $("login-message");
    postJSON("/api/login", { token: $("token").value }).then(function (r) {
      $("token").value = "";
      if (r.status === 200) { session(r.data); text(message, ""); }
      else { text(message, r.data.error || ("HTTP " + r.status)); }
      render(null);
    });
  });

  $("logout").addEventListener("click", function () {
    postJSON("/api/logout", {}).then(function () { session({ logged_in: false }); render(null); });
  });

  $("transform-toggle").addEventListener("click", function () {
    var message = $("transform-message");
    postJSON("/api/transforms", { enabled: !state.transform.enabled }).then(function (r) {
      if (r.status === 200) {
        state.transform = { configured: true, enabled: r.data.enabled };
        text(message, "transforms switched " + (r.data.enabled ? "on" : "off"));
      } else {
        text(message, r.data.error || ("HTTP " + r.status));
        if (r.status === 401) { session({ logged_in: false }); }
      }
      render(null);
    });
  });

  Promise.all([getJSON("/api/session"), getJSON("/api/history")]).then(function (got) {
    session(got[0]);
    got[1].samples.forEach(add);
    var source = got[1].source === "prometheus"
      ? "before them, " + got[1].prometheus_points + " points from Prometheus"
      : (got[1].prometheus_error ? "Prometheus unavailable: " + got[1].prometheus_error
                                 : "the last five minutes");
    text($("history-source"), source);
    document.body.dataset.history = got[1].source;
    makeCharts();
    render(null);
    poll();
    setInterval(poll, 1000);
  }).catch(function (err) { text($("updated"), "cannot start: " + err.message); });
}());
