(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("probe-data").textContent);
  var rows = data.rows;
  var NCOL = data.columns.length;
  var C_STATUS = 0, C_ID = 1, C_PORT = 4, C_CELL = NCOL, C_ANCHOR = NCOL + 1, C_CHECK = NCOL + 2;
  var tbody = document.getElementById("probe-rows");
  var shown = document.getElementById("shown");
  var filter = document.getElementById("filter");
  var status = document.getElementById("status");
  var cellBox = document.getElementById("cellfilter");
  var cellText = document.getElementById("celltext");
  var cell = "";

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  // one <tr> per probe, built once; filtering hides rows, sorting moves them
  var html = [];
  for (var i = 0; i < rows.length; i++) {
    var r = rows[i];
    var id = esc(r[C_ID]);
    var link = r[C_ANCHOR] ? '<a href="#' + r[C_ANCHOR] + "-" + id + '">' + id + "</a>" : id;
    var st = esc(r[C_STATUS]);
    var check = r[C_CHECK] && r[C_CHECK] !== "agrees" ? ' <small>' + esc(r[C_CHECK]) + "</small>" : "";
    html.push(
      '<tr id="t-' + id + '" data-status="' + st + '" data-cell="' + esc(r[C_CELL]) + '">' +
      '<td><span class="badge st-' + st + '">' + st + "</span>" + check + "</td><td>" + link + "</td>" +
      "<td>" + esc(r[2]) + "</td><td>" + esc(r[3]) + "</td><td>" + esc(r[4]) + "</td><td>" + esc(r[5]) +
      '</td><td><span class="v v-' + esc(r[6]) + '">' + esc(r[6]) + '</span></td><td><span class="v v-' +
      esc(r[7]) + '">' + esc(r[7]) + "</span></td><td>" + esc(r[8]) + "</td><td>" + esc(r[9]) +
      "</td><td>" + esc(r[10]) + "</td></tr>"
    );
  }
  tbody.innerHTML = html.join("");
  var trs = Array.prototype.slice.call(tbody.rows);
  var text = rows.map(function (r) {
    return r.slice(0, NCOL).join(" ").toLowerCase() + " " + (r[C_CHECK] || "");
  });

  function apply() {
    var terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var want = status.value;
    var n = 0;
    for (var i = 0; i < rows.length; i++) {
      var ok = true;
      var st = rows[i][C_STATUS];
      if (want === "!same") ok = st !== "same";
      else if (want) ok = st === want;
      if (ok && cell) ok = rows[i][C_CELL] === cell;
      for (var t = 0; ok && t < terms.length; t++) ok = text[i].indexOf(terms[t]) !== -1;
      trs[i].hidden = !ok;
      if (ok) n++;
    }
    shown.textContent = n === rows.length ? rows.length + " probes" : n + " of " + rows.length + " probes";
    document.body.setAttribute("data-shown", String(n));
  }

  var timer = null;
  filter.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(apply, 60);
  });
  status.addEventListener("change", apply);

  // sorting: click a header; numbers sort as numbers
  var order = rows.map(function (_, i) { return i; });
  var heads = document.querySelectorAll("#probe-table thead th");
  var sortCol = -1, sortDir = 1;
  var rank = { lost: 0, gained: 1, predicted: 2, error: 3, flaky: 4, accepted: 5, missing: 6, "new": 7, same: 8 };
  function key(i, c) {
    var v = rows[i][c];
    if (c === C_STATUS) return rank[v] === undefined ? 9 : rank[v];
    if (c === C_PORT) { var m = /^(\d+)/.exec(v); return m ? +m[1] : 1e9; }
    return String(v).toLowerCase();
  }
  function sortBy(c) {
    sortDir = c === sortCol ? -sortDir : 1;
    sortCol = c;
    order.sort(function (a, b) {
      var x = key(a, c), y = key(b, c);
      return (x < y ? -1 : x > y ? 1 : a - b) * sortDir;
    });
    var frag = document.createDocumentFragment();
    for (var i = 0; i < order.length; i++) frag.appendChild(trs[order[i]]);
    tbody.appendChild(frag);
    for (var h = 0; h < heads.length; h++) heads[h].className = h === c ? (sortDir > 0 ? "asc" : "desc") : "";
  }
  Array.prototype.forEach.call(heads, function (th) {
    var c = +th.getAttribute("data-col");
    th.addEventListener("click", function () { sortBy(c); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(c); });
  });

  // a matrix cell lists its probes in the table
  var selected = null;
  function showCell(td) {
    cell = td.getAttribute("data-cell");
    if (selected) selected.classList.remove("sel");
    selected = td;
    td.classList.add("sel");
    cellText.textContent = "Probes of one matrix cell: " + (td.getAttribute("title") || "").split("\n")[0];
    cellBox.hidden = false;
    status.value = "";
    apply();
    document.getElementById("probes").scrollIntoView();
  }
  document.getElementById("clearcell").addEventListener("click", function () {
    cell = "";
    cellBox.hidden = true;
    if (selected) selected.classList.remove("sel");
    selected = null;
    apply();
  });
  document.getElementById("mx").addEventListener("click", function (e) {
    var td = e.target.closest("td.c");
    if (!td) return;
    e.preventDefault();
    showCell(td);
  });

  // the count tiles filter the table by status
  Array.prototype.forEach.call(document.querySelectorAll(".tile"), function (a) {
    a.addEventListener("click", function () {
      var s = a.getAttribute("data-status");
      if (!s) return;
      if (s.indexOf("text:") === 0) {
        status.value = "";
        filter.value = s.slice(5);
      } else {
        var opt = status.querySelector('option[value="' + s + '"]');
        status.value = opt ? s : "";
        filter.value = "";
      }
      apply();
    });
  });

  // copy buttons: the clipboard API where allowed, else a selection and execCommand
  Array.prototype.forEach.call(document.querySelectorAll("button.copy"), function (b) {
    b.addEventListener("click", function () {
      var pre = document.getElementById(b.getAttribute("data-copy"));
      var t = pre.textContent;
      function done() { b.textContent = "Copied"; b.classList.add("done"); setTimeout(function () { b.textContent = "Copy YAML"; b.classList.remove("done"); }, 1500); }
      function fallback() {
        var range = document.createRange();
        range.selectNodeContents(pre);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        try { document.execCommand("copy"); done(); } catch (err) { b.textContent = "Selected: press Ctrl+C"; }
      }
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(t).then(done, fallback);
      else fallback();
    });
  });

  // following a link to a probe hidden by the filter shows it again
  window.addEventListener("hashchange", function () {
    var el = document.getElementById(location.hash.slice(1));
    if (el && el.hidden) {
      filter.value = ""; status.value = ""; cell = ""; cellBox.hidden = true;
      apply();
      el.scrollIntoView();
    }
  });

  // print: open every "why, in full"
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
  });

  apply();
  document.body.setAttribute("data-ready", "1");
})();
