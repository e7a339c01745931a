// Light, optional behaviour: sortable tables, the latency-budget box, the "front only" toggle.
(function () {
  "use strict";
  function cellValue(row, idx) {
    var td = row.cells[idx];
    if (!td) return null;
    var v = td.getAttribute("data-v");
    if (v === null) v = td.textContent.trim();
    if (v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th[data-sortable]").forEach(function (th) {
      th.addEventListener("click", function () {
        var idx = th.cellIndex, body = table.tBodies[0];
        var asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("th[aria-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        var pinned = rows.filter(function (r) { return r.classList.contains("pinned"); });
        rows = rows.filter(function (r) { return !r.classList.contains("pinned"); });
        rows.sort(function (a, b) {
          var x = cellValue(a, idx), y = cellValue(b, idx);
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          var c = x < y ? -1 : (x > y ? 1 : 0);
          return asc ? c : -c;
        });
        rows.concat(pinned).forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll("input.front-toggle").forEach(function (box) {
    box.addEventListener("change", function () {
      var t = document.getElementById(box.getAttribute("data-table"));
      if (t) t.classList.toggle("only-front", box.checked);
    });
  });
  function fmt(x) { return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toPrecision(3); }
  document.querySelectorAll(".budget-box").forEach(function (box) {
    var src = document.getElementById(box.getAttribute("data-src"));
    if (!src) return;
    var d = JSON.parse(src.textContent);
    var input = box.querySelector("input"), out = box.querySelector("output");
    // The rows are bench.analysis's budget rows (computed in Python): the answer for a budget is the last row
    // whose best cell fits it, with that row's ties. No tie rule is re-implemented here.
    function update() {
      var budget = Number(input.value);
      out.textContent = "";
      if (!(budget > 0)) return;
      var fits = d.rows.filter(function (r) { return r.lat <= budget; });
      if (!fits.length) {
        out.textContent = d.rows.length ? "Nothing runs within " + fmt(budget) + " ms; the fastest cell needs " +
          fmt(d.rows[0].lat) + " ms." : "No cell with a stable latency.";
        return;
      }
      var row = fits[fits.length - 1];
      var strong = document.createElement("strong");
      strong.textContent = row.label;
      if (row.decided) {
        out.appendChild(document.createTextNode("Within " + fmt(budget) + " ms ship "));
        out.appendChild(strong);
        out.appendChild(document.createTextNode(": " + d.metric + " " + row.quality + " at " + row.latency + " ms" +
          (row.ties.length ? "; quality tied: " + row.ties.join(", ") : "") + "."));
      } else {
        out.appendChild(document.createTextNode("Within " + fmt(budget) + " ms: not decided. "));
        out.appendChild(strong);
        out.appendChild(document.createTextNode(" (" + d.metric + " " + row.quality + " at " + row.latency +
          " ms) has a latency tie with " + row.latency_ties.join(", ") + ": not separated."));
      }
      if (d.unstable.length) {
        out.appendChild(document.createTextNode(" Left out (unstable latency): " + d.unstable.join(", ") + "."));
      }
    }
    input.addEventListener("input", update);
    update();
  });
})();
