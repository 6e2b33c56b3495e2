// Linli back-office: progressive enhancement only. Every page works without this file; with it,
// open lists and records refresh themselves when a phone syncs, and statistics draw charts.
(function () {
  "use strict";

  function banner(text) {
    var b = document.getElementById("banner");
    if (!b) return;
    b.textContent = text;
    b.classList.add("show");
  }

  function withParam(url, key, value) {
    var u = new URL(url, location.href);
    u.searchParams.set(key, value);
    return u.toString();
  }

  // A form being filled in is never replaced under the user's hands.
  var dirty = false;
  document.addEventListener("input", function (e) {
    if (e.target.closest && e.target.closest("form.edit")) dirty = true;
  });

  function refreshQueue() {
    var rows = document.getElementById("rows");
    if (!rows) return;
    fetch(withParam(location.href, "partial", "rows"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var before = {};
        rows.querySelectorAll("tr[data-id]").forEach(function (tr) {
          before[tr.dataset.id] = tr.dataset.version;
        });
        rows.innerHTML = html;
        rows.querySelectorAll("tr[data-id]").forEach(function (tr) {
          if (before[tr.dataset.id] !== tr.dataset.version) tr.classList.add("fresh");
        });
      })
      .catch(function () {});
  }

  function refreshRecord(id) {
    var box = document.getElementById("record");
    if (!box || box.dataset.record !== id) return;
    if (dirty) { banner("此记录已有新的修改，保存或刷新页面后可见。"); return; }
    fetch(withParam(location.href, "partial", "1"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { box.innerHTML = html; })
      .catch(function () {});
  }

  var live = document.body.dataset.live;
  if (live && window.EventSource) {
    var timer = null;
    var es = null;
    var connect = function () {
      es = new EventSource("/office/events");
      // Changes between rendering the page and (re)connecting the stream are not announced:
      // a list catches up once the stream is open.
      es.addEventListener("open", function () { if (live === "queue") refreshQueue(); });
      es.addEventListener("record", function (e) {
        var data = JSON.parse(e.data);
        if (live === "queue") {
          clearTimeout(timer);
          timer = setTimeout(refreshQueue, 300);
        } else if (live === "detail") {
          refreshRecord(data.id);
        }
      });
      es.addEventListener("resync", function () { if (live === "queue") refreshQueue(); });
      es.addEventListener("ended", function () {
        es.close();
        es = null;
        banner("会话已结束，请重新登录。");
      });
    };
    connect();
    // A page left for the next one may stay in the back/forward cache with its stream open;
    // a browser allows six connections to a server over HTTP/1.1, so a few clicks would use
    // them all and every further request would hang. Close on leaving, reconnect on return.
    window.addEventListener("pagehide", function () {
      if (es) { es.close(); es = null; }
    });
    window.addEventListener("pageshow", function (e) {
      if (e.persisted && !es) connect();
    });
  }

  document.addEventListener("submit", function (e) {
    var msg = e.target.dataset && e.target.dataset.confirm;
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  // Charts: each .chart carries {type, labels, series: [{name, data}], links} in data-chart
  // (an HTML-escaped attribute: the browser decodes it, nothing in it is ever parsed as HTML).
  if (window.echarts) {
    document.querySelectorAll(".chart[data-chart]").forEach(function (el) {
      var spec = JSON.parse(el.dataset.chart);
      var chart = echarts.init(el, null, { renderer: "canvas" });
      var option;
      // richText tooltips are drawn on the canvas: labels from phones never become HTML.
      var tooltip = { trigger: spec.type === "pie" ? "item" : "axis", renderMode: "richText" };
      if (spec.type === "pie") {
        option = {
          tooltip: tooltip,
          legend: { bottom: 0 },
          series: [{
            type: "pie", radius: ["35%", "65%"],
            data: spec.labels.map(function (l, i) { return { name: l, value: spec.series[0].data[i] }; })
          }]
        };
      } else {
        option = {
          tooltip: tooltip,
          legend: { bottom: 0 },
          grid: { left: 48, right: 16, top: 16, bottom: 56 },
          xAxis: { type: "category", data: spec.labels, axisLabel: { interval: 0, rotate: spec.labels.length > 8 ? 30 : 0 } },
          yAxis: { type: "value" },
          series: spec.series.map(function (s) { return { name: s.name, type: spec.type, data: s.data }; })
        };
      }
      // Marks a chart whose drawing (and opening animation) is complete, e.g. for screenshots.
      chart.on("finished", function () { el.dataset.drawn = "1"; });
      chart.setOption(option);
      if (spec.links) {
        chart.on("click", function (p) {
          var href = spec.links[p.dataIndex];
          if (href) location.href = href;
        });
      }
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
})();
