/* Draws every [data-chart] container of a dashboard from the embedded #report-data JSON (Chart.js 4). */
(function () {
  "use strict";
  /* A report of `--conversation-id all` loads the chart library from beside index.html; copied out
     of its folder it has none: say so in every chart box instead of leaving them blank. */
  if (typeof Chart === "undefined") {
    var library = document.querySelector("script[src]");
    var where = library ? library.getAttribute("src") : "chart.umd.min.js";
    document.querySelectorAll("[data-chart]").forEach(function (box) {
      var note = document.createElement("p");
      note.className = "empty missing-library";
      note.textContent = "Charts need the chart library " + where + ", which was not found: copy the report " +
        "together with chart.umd.min.js from its folder (the folder of index.html), or write a self-contained " +
        "report with complete_cache_visualizer.py --conversation-id <id> --output FILE.html.";
      box.replaceChildren(note);
      box.setAttribute("data-rendered", "missing-library");
    });
    document.body.setAttribute("data-charts-ready", "1");
    return;
  }
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var R = DATA.requests;
  var COLORS = {
    read: "#2f6fdf", create: "#f0a22e", fresh: "#d9534f",
    readSim: "#8fb3f0", createSim: "#f7cf8f", freshSim: "#eba3a1",
    api: "#1f4e9e", sim: "#e07b00", lru: "#2f6fdf", opt: "#2a9d5c", grid: "#e3e6ec"
  };
  var LANE_PALETTE = ["#6a4c93", "#2a9d8f", "#e76f51", "#8ab17d", "#c05299", "#4d908e",
    "#b5838d", "#577590", "#e9c46a", "#f4845f", "#43aa8b", "#9c6644"];
  var MAX_LANE_DATASETS = 12;
  var nf = new Intl.NumberFormat("en-US");

  function fmtTokens(v) { return v == null ? "n/a" : nf.format(Math.round(v)); }
  function fmtShortTokens(v) {
    if (v == null) { return "n/a"; }
    if (Math.abs(v) >= 1e6) { return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M"; }
    if (Math.abs(v) >= 1e3) { return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "K"; }
    return String(Math.round(v));
  }
  function fmtPct(v) { return v == null ? "n/a" : (v * 100).toFixed(1) + "%"; }
  function fmtTime(s) {
    if (s == null) { return "n/a"; }
    if (s < 120) { return trimZero(s.toFixed(s < 10 ? 1 : 0)) + " s"; }
    if (s < 7200) { return trimZero((s / 60).toFixed(1)) + " min"; }
    return trimZero((s / 3600).toFixed(1)) + " h";
  }
  function trimZero(text) { return text.replace(/\.0$/, ""); }

  /* Round time steps (1 s … 1 day) instead of Chart.js's decimal ones, which give "3.3 min" ticks. */
  var TIME_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
  function roundTimeTicks(scale) {
    var range = scale.max - scale.min;
    var step = TIME_STEPS_S.filter(function (s) { return range / s <= 8; })[0] || 86400 * Math.ceil(range / 86400 / 8);
    var ticks = [];
    for (var v = Math.ceil(scale.min / step) * step; v <= scale.max + 1e-9; v += step) { ticks.push({ value: v }); }
    scale.ticks = ticks;
  }
  /* Log axes get a label only at 1, 2 and 5 × 10^k so neighbouring labels do not overlap. */
  function logTickLabel(v) {
    var mantissa = v / Math.pow(10, Math.floor(Math.log10(v) + 1e-9));
    return [1, 2, 5].some(function (m) { return Math.abs(mantissa - m) < 1e-6; }) ? fmtShortTokens(v) : "";
  }

  function laneColor(lane) {
    if (lane === "parent") { return "#1f4e9e"; }
    if (lane === "unlinked") { return "#8a8f98"; }
    var i = DATA.lanes.indexOf(lane);
    return LANE_PALETTE[(i < 0 ? 0 : i) % LANE_PALETTE.length];
  }

  /* Tooltip lines shared by every per-request chart: the brief's "index, tokens, hit rate". */
  function requestTitle(i) {
    return "Request #" + R.index[i] + " · " + R.lane[i] + " · " + R.model[i];
  }
  function requestFooter(i) {
    return [
      "Prompt: " + fmtTokens(R.context[i]) + " tokens (+" + fmtTokens(R.growth[i]) + ")",
      "Hit rate: API " + fmtPct(R.api_hit[i]) + " · simulated " + fmtPct(R.sim_hit[i]),
      "t = " + fmtTime(R.t_s[i])
    ];
  }
  function requestTooltip(indexOf, label) {
    return {
      callbacks: {
        title: function (items) { return items.length ? requestTitle(indexOf(items[0])) : ""; },
        label: label,
        footer: function (items) { return items.length ? requestFooter(indexOf(items[0])) : ""; }
      }
    };
  }
  function byDataIndex(item) { return item.dataIndex; }
  function byPointIndex(item) { return item.raw.i; }

  function timeAxis(title) {
    return { type: "linear", title: { display: true, text: title || "time since first request" },
      afterBuildTicks: roundTimeTicks, ticks: { callback: function (v) { return fmtTime(v); } },
      grid: { color: COLORS.grid } };
  }
  function tokenAxis(title, extra) {
    var axis = { beginAtZero: true, title: { display: true, text: title },
      ticks: { callback: function (v) { return fmtShortTokens(v); } }, grid: { color: COLORS.grid } };
    return Object.assign(axis, extra || {});
  }
  function rateAxis(title, extra) {
    var axis = { min: 0, max: 1, title: { display: true, text: title },
      ticks: { callback: function (v) { return Math.round(v * 100) + "%"; } }, grid: { color: COLORS.grid } };
    return Object.assign(axis, extra || {});
  }

  function requestBars() {
    var sets = [];
    var hasApi = R.api_read.some(function (v) { return v != null; });
    function add(label, values, color, stack) {
      sets.push({ label: label, data: values, backgroundColor: color, stack: stack, borderWidth: 0 });
    }
    if (hasApi) {
      add("API cache read", R.api_read, COLORS.read, "api");
      add("API cache creation", R.api_create, COLORS.create, "api");
      add("API new", R.api_new, COLORS.fresh, "api");
    }
    add("Simulated cache read", R.sim_read, COLORS.readSim, "sim");
    add("Simulated cache creation", R.sim_create, COLORS.createSim, "sim");
    add("Simulated new", R.sim_new, COLORS.freshSim, "sim");
    return {
      type: "bar",
      data: { labels: R.index.map(function (v) { return "#" + v; }), datasets: sets },
      options: {
        interaction: { mode: "index", intersect: false },
        plugins: { tooltip: requestTooltip(byDataIndex, function (item) {
          return item.dataset.label + ": " + fmtTokens(item.raw);
        }) },
        scales: { x: { stacked: true, title: { display: true, text: "request" }, grid: { display: false } },
          y: tokenAxis("prompt tokens", { stacked: true }) }
      }
    };
  }

  function points(ys) {
    var out = [];
    for (var i = 0; i < R.index.length; i++) {
      if (ys[i] != null) { out.push({ x: R.t_s[i], y: ys[i], i: i }); }
    }
    return out;
  }

  /* Token-weighted running hit rate: per-request points zigzag between interleaved lanes. */
  function cumulative(read, create, fresh) {
    var hits = 0, total = 0;
    return read.map(function (r, i) {
      if (r == null) { return null; }
      hits += r; total += r + create[i] + fresh[i];
      return total ? hits / total : 0;
    });
  }

  function hitRate() {
    var sets = [];
    function add(label, values, color, isRunning, dash) {
      sets.push({ label: label, data: points(values), borderColor: color, backgroundColor: color,
        showLine: isRunning, pointRadius: isRunning ? 0 : 2.5, borderWidth: 2, borderDash: dash || [] });
    }
    if (R.api_hit.some(function (v) { return v != null; })) {
      add("API, per request", R.api_hit, COLORS.api, false);
      add("API, cumulative", cumulative(R.api_read, R.api_create, R.api_new), COLORS.api, true);
    }
    add("Simulated, per request", R.sim_hit, COLORS.sim, false);
    add("Simulated, cumulative", cumulative(R.sim_read, R.sim_create, R.sim_new), COLORS.sim, true, [5, 3]);
    return {
      type: "scatter",
      data: { datasets: sets },
      options: {
        interaction: { mode: "nearest", intersect: false },
        plugins: { tooltip: requestTooltip(byPointIndex, function (item) {
          return item.dataset.label + ": " + fmtPct(item.raw.y);
        }) },
        scales: { x: timeAxis(), y: rateAxis("hit rate (tokens)") }
      }
    };
  }

  /* One dataset per lane so each sub-agent's context growth reads as its own line. */
  function laneDatasets(values, asLine) {
    var lanes = DATA.lanes.slice(0, MAX_LANE_DATASETS);
    var groups = {};
    lanes.forEach(function (lane) { groups[lane] = []; });
    var other = [];
    for (var i = 0; i < R.index.length; i++) {
      var target = groups[R.lane[i]] || other;
      target.push({ x: asLine ? R.t_s[i] : R.index[i], y: values[i], i: i });
    }
    var sets = lanes.map(function (lane) {
      return { label: lane, data: groups[lane], borderColor: laneColor(lane), backgroundColor: laneColor(lane),
        showLine: asLine, pointRadius: asLine ? 2 : 0, borderWidth: asLine ? 1.5 : 0 };
    });
    if (other.length) {
      sets.push({ label: "other lanes", data: other, borderColor: "#b0b4bb", backgroundColor: "#b0b4bb",
        showLine: false, pointRadius: 2 });
    }
    return sets;
  }

  function laneTooltip(unit) {
    return requestTooltip(byPointIndex, function (item) { return unit + ": " + fmtTokens(item.raw.y); });
  }

  function contextLength() {
    return {
      type: "scatter",
      data: { datasets: laneDatasets(R.context, true) },
      options: { interaction: { mode: "nearest", intersect: false },
        plugins: { tooltip: laneTooltip("Context") },
        scales: { x: timeAxis(), y: tokenAxis("context tokens") } }
    };
  }

  function growth() {
    var sets = laneDatasets(R.growth, false).map(function (set) {
      return Object.assign(set, { type: "bar", barThickness: "flex", borderWidth: 0 });
    });
    return {
      type: "bar",
      data: { datasets: sets },
      options: { interaction: { mode: "nearest", intersect: false }, parsing: { xAxisKey: "x", yAxisKey: "y" },
        plugins: { tooltip: laneTooltip("Growth") },
        scales: { x: { type: "linear", offset: true, title: { display: true, text: "request" },
          grid: { display: false } }, y: tokenAxis("tokens added") } }
    };
  }

  function ttlSweep() {
    var rows = DATA.ttl;
    return {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.label; }),
        datasets: [
          { type: "bar", label: "Hit rate", data: rows.map(function (r) { return r.hit_rate; }),
            backgroundColor: rows.map(function (r) { return r.is_selected ? COLORS.api : COLORS.readSim; }),
            yAxisID: "y" },
          { type: "line", label: "Peak working set", data: rows.map(function (r) { return r.peak; }),
            borderColor: COLORS.sim, backgroundColor: COLORS.sim, yAxisID: "y2", pointRadius: 3 }
        ]
      },
      options: {
        interaction: { mode: "index", intersect: false },
        plugins: { tooltip: { callbacks: {
          title: function (items) { return "TTL " + items[0].label; },
          label: function (item) {
            return item.datasetIndex === 0 ? "Hit rate: " + fmtPct(item.raw)
              : "Peak working set: " + fmtTokens(item.raw) + " tokens";
          },
          footer: function (items) {
            var r = rows[items[0].dataIndex];
            return ["Prefills per block: " + r.prefills.toFixed(2), "Stable blocks: " + fmtPct(r.stable)];
          } } } },
        scales: { x: { title: { display: true, text: "cache TTL" }, grid: { display: false } },
          y: rateAxis("hit rate (tokens)"),
          y2: tokenAxis("peak working set (tokens)", { position: "right", grid: { drawOnChartArea: false } }) }
      }
    };
  }

  function steps(series, key) {
    return series.t_s.map(function (t, i) { return { x: t, y: series[key][i] }; });
  }

  function workingSet() {
    return {
      type: "scatter",
      data: { datasets: [{ label: "Tokens alive (TTL " + DATA.cache_ttl_label + ")",
        data: steps(DATA.working_set, "tokens"), showLine: true, stepped: "after", pointRadius: 0,
        borderColor: COLORS.lru, backgroundColor: "rgba(47,111,223,0.15)", fill: "origin", borderWidth: 1.5 }] },
      options: { interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: { tooltip: { callbacks: {
          title: function (items) { return "t = " + fmtTime(items[0].raw.x); },
          label: function (item) { return "Working set: " + fmtTokens(item.raw.y) + " tokens"; } } } },
        scales: { x: timeAxis(), y: tokenAxis("tokens in cache") } }
    };
  }

  /* Chart.js has no annotation plugin built in; this draws the 90/95/99 % capacity markers. */
  var capacityMarkers = {
    id: "capacityMarkers",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.setLineDash([4, 4]);
      DATA.capacity.targets.forEach(function (target, n) {
        if (target.lru == null || target.lru <= 0) { return; }
        var px = x.getPixelForValue(target.lru);
        if (px < area.left || px > area.right) { return; }
        ctx.strokeStyle = "#5b6270";
        ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke();
        ctx.fillStyle = "#2b2f36";
        ctx.fillText(Math.round(target.share * 100) + "%", px + 3, area.top + 12 + 13 * n);
      });
      ctx.restore();
    }
  };

  function capacity() {
    var c = DATA.capacity;
    function line(key) { return c.capacity.map(function (cap, i) { return { x: cap, y: c[key][i] }; }); }
    var infinite = [{ x: c.capacity[0], y: c.infinite }, { x: c.capacity[c.capacity.length - 1], y: c.infinite }];
    return {
      type: "scatter",
      data: { datasets: [
        { label: "LRU", data: line("lru"), showLine: true, borderColor: COLORS.lru, backgroundColor: COLORS.lru,
          pointRadius: 2.5 },
        { label: "OPT (Belady)", data: line("opt"), showLine: true, borderColor: COLORS.opt,
          backgroundColor: COLORS.opt, pointRadius: 2.5, borderDash: [5, 3] },
        { label: "Infinite cache", data: infinite, showLine: true, borderColor: "#8a8f98", pointRadius: 0,
          borderWidth: 1, borderDash: [2, 3] }
      ] },
      options: { interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: { tooltip: { callbacks: {
          title: function (items) { return "Capacity " + fmtTokens(items[0].raw.x) + " tokens"; },
          label: function (item) { return item.dataset.label + ": " + fmtPct(item.raw.y); } } } },
        scales: { x: { type: c.log_scale ? "logarithmic" : "linear", title: { display: true, text: "cache capacity (tokens)" },
          ticks: { callback: c.log_scale ? logTickLabel : fmtShortTokens }, grid: { color: COLORS.grid } },
          y: rateAxis("hit rate (tokens)") } },
      plugins: [capacityMarkers]
    };
  }

  function timing(name) {
    var t = DATA.timings.filter(function (item) { return item.name === name; })[0];
    return {
      type: "bar",
      data: { labels: t.bins, datasets: [{ label: t.label, data: t.counts, backgroundColor: COLORS.lru }] },
      options: { plugins: { legend: { display: false }, tooltip: { callbacks: {
          title: function (items) { return t.label + ": " + items[0].label; },
          label: function (item) { return item.raw + " requests"; } } } },
        scales: { x: { title: { display: true, text: "seconds" }, grid: { display: false } },
          y: { beginAtZero: true, title: { display: true, text: "requests" }, ticks: { precision: 0 },
            grid: { color: COLORS.grid } } } }
    };
  }

  function gantt() {
    var lanes = DATA.subagents;
    return {
      type: "bar",
      data: { labels: lanes.map(function (l) { return l.id; }), datasets: [{ label: "Active",
        data: lanes.map(function (l) { return [l.spawn, l.finish]; }),
        backgroundColor: lanes.map(function (l) { return laneColor(l.id); }), borderSkipped: false, barPercentage: 0.7 }] },
      options: { indexAxis: "y", plugins: { legend: { display: false }, tooltip: { callbacks: {
          title: function (items) { var l = lanes[items[0].dataIndex]; return l.id + " (" + l.type + ")"; },
          label: function (item) {
            var l = lanes[item.dataIndex];
            return ["Spawned " + fmtTime(l.spawn) + ", finished " + fmtTime(l.finish),
              l.requests + " requests over " + fmtTime(l.finish - l.spawn)];
          } } } },
        scales: { x: timeAxis(), y: { grid: { display: false } } } }
    };
  }

  function concurrency() {
    return {
      type: "scatter",
      data: { datasets: [{ label: "In flight", data: steps(DATA.concurrency, "active"), showLine: true,
        stepped: "after", pointRadius: 0, borderColor: COLORS.opt, backgroundColor: "rgba(42,157,92,0.15)",
        fill: "origin", borderWidth: 1.5 }] },
      options: { interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: { legend: { display: false }, tooltip: { callbacks: {
          title: function (items) { return "t = " + fmtTime(items[0].raw.x); },
          label: function (item) { return item.raw.y + " in flight"; } } } },
        scales: { x: timeAxis(), y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "in flight" },
          grid: { color: COLORS.grid } } } }
    };
  }

  /* Why each miss: per request, billed (left stack) and simulated (right stack, lighter) tokens by cause. */
  var CAUSE_COLORS = {
    first_use: "#8a8f98", ttl_expiry: "#d9534f", capacity_eviction: "#6a4c93", in_flight: "#f0a22e",
    tools_changed: "#2a9d8f", system_changed: "#43aa8b", model_switch: "#2f6fdf", message_edited: "#577590",
    compaction: "#c05299", partial_block: "#c9ccd2", beyond_breakpoint: "#9c6644", server_side: "#1f1f1f"
  };
  function misses() {
    var m = DATA.misses;
    var sets = [];
    var hasBilled = m.causes.some(function (c) { return m.billed[c].some(function (v) { return v != null; }); });
    m.causes.forEach(function (cause) {
      var color = CAUSE_COLORS[cause] || "#b0b4bb";
      if (hasBilled) {
        sets.push({ label: "Billed: " + m.labels[cause], data: m.billed[cause], backgroundColor: color,
          stack: "billed", borderWidth: 0 });
      }
      sets.push({ label: "Simulated: " + m.labels[cause], data: m.simulated[cause], backgroundColor: color + "88",
        stack: "simulated", borderWidth: 0 });
    });
    return {
      type: "bar",
      data: { labels: R.index.map(function (v) { return "#" + v; }), datasets: sets },
      options: {
        interaction: { mode: "index", intersect: false },
        plugins: {
          /* One legend entry per cause, named by the cause alone (both stacks share its colour). */
          legend: { labels: { filter: function (item) {
            var shown = hasBilled ? item.text.indexOf("Billed: ") === 0 : true;
            item.text = item.text.replace(/^(Billed|Simulated): /, "");
            return shown;
          } } },
          tooltip: requestTooltip(byDataIndex, function (item) {
            return item.raw ? item.dataset.label + ": " + fmtTokens(item.raw) : null;
          }) },
        scales: { x: { stacked: true, title: { display: true, text: "request" }, grid: { display: false } },
          y: tokenAxis("missed tokens", { stacked: true }) }
      }
    };
  }

  var BUILDERS = {
    "requests": requestBars, "hit-rate": hitRate, "misses": misses, "context": contextLength, "growth": growth,
    "ttl": ttlSweep, "working-set": workingSet, "capacity": capacity, "gantt": gantt, "concurrency": concurrency
  };

  /* Axis titles longer than their axis are clipped by the canvas; the browser test reads this list. */
  function overflowingTitles(chart) {
    var ctx = chart.ctx;
    var out = [];
    Object.keys(chart.scales).forEach(function (id) {
      var scale = chart.scales[id];
      var title = scale.options.title;
      if (!title || !title.display || !title.text) { return; }
      ctx.save();
      ctx.font = Chart.helpers.toFont(title.font).string;
      var width = ctx.measureText(title.text).width;
      ctx.restore();
      if (width > (scale.isHorizontal() ? scale.width : scale.height)) { out.push(title.text); }
    });
    return out;
  }

  /* A canvas counts as drawn only if some pixel is painted; the browser test reads this flag. */
  function isPainted(canvas) {
    var ctx = canvas.getContext("2d");
    var pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    for (var i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { return true; } }
    return false;
  }

  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  Chart.defaults.color = "#3c4350";
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  document.querySelectorAll("[data-chart]").forEach(function (box) {
    var name = box.getAttribute("data-chart");
    var build = name.indexOf("timing-") === 0 ? function () { return timing(name.slice(7)); } : BUILDERS[name];
    var canvas = box.querySelector("canvas");
    try {
      var chart = new Chart(canvas, build());
      box.setAttribute("data-rendered", isPainted(canvas) ? "1" : "blank");
      box.setAttribute("data-title-overflow", JSON.stringify(overflowingTitles(chart)));
    } catch (err) {
      box.setAttribute("data-rendered", "error");
      console.error("chart " + name + " failed:", err);
    }
  });
  document.body.setAttribute("data-charts-ready", "1");
})();
