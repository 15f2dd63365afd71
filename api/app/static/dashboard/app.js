// fluxo dashboard: signs in with client credentials, keeps the token in memory only, and draws
// every series the API lists at /dashboard/series.json for the chosen days (uPlot, vendored).
(function () {
  "use strict";
  var token = null;
  var charts = [];
  var generation = 0;  // a newer show() makes an older one stop drawing
  var $ = function (id) { return document.getElementById(id); };

  function setStatus(text) { $("status").textContent = text; }
  function iso(d) { return d.toISOString().slice(0, 10); }

  async function signIn(clientId, secret) {
    var body = new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: secret });
    var response = await fetch("/auth/token", { method: "POST", body: body });
    var answer = await response.json();
    if (!response.ok) { throw new Error(answer.error_description || answer.error || response.statusText); }
    return answer.access_token;
  }

  // Every row of a list in the window, following the Link header of paged lists.
  async function rows(path, from, to, paged) {
    var url = path + "?from=" + from + "&to=" + to + (paged ? "&limit=10000" : "");
    var all = [];
    while (url) {
      var response = await fetch(url, { headers: { Authorization: "Bearer " + token } });
      if (!response.ok) {
        var problem = await response.json().catch(function () { return {}; });
        var error = new Error(problem.error_description || response.statusText);
        error.status = response.status;
        throw error;
      }
      all = all.concat(await response.json());
      var link = response.headers.get("Link");
      var next = link && link.match(/<([^>]+)>;\s*rel="next"/);
      url = next ? next[1] : null;
    }
    return all;
  }

  function valueOf(row, dotted) {
    return dotted.split(".").reduce(function (v, key) { return v == null ? null : v[key]; }, row);
  }

  // One value per day of the window (null where there is none), combined as the series says.
  function perDay(list, series, from, to) {
    var byDay = {};
    list.forEach(function (row) {
      var v = Number(valueOf(row, series.value));
      if (!isFinite(v)) { return; }
      var d = row[series.day];
      byDay[d] = byDay[d] == null ? v : (series.per_day === "max" ? Math.max(byDay[d], v) : byDay[d] + v);
    });
    var xs = [], ys = [];
    for (var d = new Date(from + "T00:00:00Z"); iso(d) <= to; d.setUTCDate(d.getUTCDate() + 1)) {
      xs.push(d.getTime() / 1000);
      ys.push(byDay[iso(d)] == null ? null : byDay[iso(d)]);
    }
    return [xs, ys];
  }

  function compact(v) {
    if (v == null) { return ""; }
    var a = Math.abs(v);
    if (a >= 1e9) { return (v / 1e9).toFixed(1) + "G"; }
    if (a >= 1e6) { return (v / 1e6).toFixed(1) + "M"; }
    if (a >= 1e4) { return (v / 1e3).toFixed(0) + "k"; }
    return String(Math.round(v * 1000) / 1000);
  }

  function draw(series, data) {
    var box = document.createElement("section");
    box.className = "chart";
    box.dataset.series = series.title;
    var title = document.createElement("h2");
    title.textContent = series.title + (series.unit ? " (" + series.unit + ")" : "");
    box.appendChild(title);
    $("charts").appendChild(box);
    var width = Math.max(420, box.clientWidth - 24);
    charts.push(new uPlot({
      width: width, height: 220,
      series: [{}, { label: series.title, stroke: "#2f6fde", fill: "rgba(47,111,222,.12)", width: 2,
                     points: { show: true, size: 5 }, spanGaps: false }],
      axes: [{}, { size: 60, values: function (u, values) { return values.map(compact); } }],
      scales: { x: { time: true } },
      legend: { show: true }
    }, data, box));
  }

  function note(series, text) {
    var box = document.createElement("section");
    box.className = "chart";
    box.dataset.series = series.title;
    box.innerHTML = "<h2></h2><p class=\"note\"></p>";
    box.querySelector("h2").textContent = series.title;
    box.querySelector("p").textContent = text;
    $("charts").appendChild(box);
  }

  async function show() {
    var mine = ++generation;
    var from = $("from").value, to = $("to").value;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    $("charts").textContent = "";
    document.body.dataset.state = "loading";
    setStatus("Loading " + from + " … " + to);
    var list = await (await fetch("/dashboard/series.json")).json();
    var cache = {};
    var drawn = 0;
    for (var i = 0; i < list.length; i++) {
      var series = list[i];
      try {
        cache[series.path] = cache[series.path] || rows(series.path, from, to, series.paged);
        var data = perDay(await cache[series.path], series, from, to);
        if (mine !== generation) { return; }
        draw(series, data);
        drawn++;
      } catch (error) {
        if (mine !== generation) { return; }
        if (error.status === 401) { signOut("Your session ended; sign in again."); return; }
        note(series, error.status === 403 ? "This client may not read it." : "Not available: " + error.message);
      }
    }
    document.body.dataset.state = "drawn";
    setStatus(drawn + " charts, " + from + " … " + to);
  }

  function signOut(message) {
    token = null;
    generation++;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    $("charts").textContent = "";
    $("range").hidden = true;
    $("login").hidden = false;
    document.body.dataset.state = "login";
    setStatus(message || "Signed out.");
  }

  $("login").addEventListener("submit", async function (event) {
    event.preventDefault();
    try {
      token = await signIn($("client_id").value, $("client_secret").value);
    } catch (error) {
      setStatus("Sign-in refused: " + error.message);
      return;
    }
    $("client_secret").value = "";
    $("login").hidden = true;
    $("range").hidden = false;
    show();
  });
  $("range").addEventListener("submit", function (event) { event.preventDefault(); show(); });
  $("logout").addEventListener("click", function () { signOut(); });

  var today = new Date();
  $("to").value = iso(today);
  $("from").value = iso(new Date(today.getTime() - 29 * 86400000));
})();
