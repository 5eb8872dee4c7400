(function () {
  "use strict";
  // the probe table: rows arrive as indices into one list of strings
  var data = JSON.parse(document.getElementById("probe-data").textContent);
  var S = data.strings;
  var rows = data.rows.map(function (r) { return r.map(function (i) { return S[i]; }); });
  var NCOL = data.columns.length;
  var C_STATUS = 0, C_ID = 1, C_PORT = 4, C_CELL = NCOL, C_ANCHOR = NCOL + 1, C_CHECK = NCOL + 2;
  var LIMIT = 200; // rows drawn at once; the rest on request
  var tbody = document.getElementById("probe-rows");
  var shown = document.getElementById("shown");
  var more = document.getElementById("more-rows");
  var filter = document.getElementById("filter");
  var status = document.getElementById("status");
  var cellBox = document.getElementById("cellfilter");
  var cellText = document.getElementById("celltext");
  var cell = "";
  var only = ""; // one probe id, when a link leads to a probe the filter hid
  var limit = LIMIT;
  var text = rows.map(function (r) {
    return r.slice(0, NCOL).join(" ").toLowerCase() + " " + r[C_CHECK];
  });
  var order = rows.map(function (_, i) { return i; });
  var view = order;

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  function rowHtml(r) {
    var id = esc(r[C_ID]);
    var link = r[C_ANCHOR] ? '<a href="#' + r[C_ANCHOR] + "-" + id + '">' + id + "</a>" : id;
    var st = esc(r[C_STATUS]);
    var check = r[C_CHECK] && r[C_CHECK] !== "agrees" ? " <small>" + esc(r[C_CHECK]) + "</small>" : "";
    var cells = "";
    for (var c = 2; c < NCOL; c++) {
      var v = esc(r[c]);
      cells += c === 6 || c === 7 ? '<td><span class="v v-' + v + '">' + v + "</span></td>" : '<td title="' + v + '">' + v + "</td>";
    }
    return '<tr id="t-' + id + '" data-status="' + st + '" data-cell="' + esc(r[C_CELL]) + '">' +
      '<td><span class="badge st-' + st + '">' + st + "</span>" + check + "</td><td>" + link + "</td>" + cells + "</tr>";
  }

  function draw() {
    var n = Math.min(view.length, limit), html = new Array(n);
    for (var i = 0; i < n; i++) html[i] = rowHtml(rows[view[i]]);
    tbody.innerHTML = html.join("");
    shown.textContent = view.length === rows.length ? rows.length + " probes" : view.length + " of " + rows.length + " probes";
    if (view.length > n) {
      more.hidden = false;
      more.innerHTML = "Showing the first " + n + ' of these; <button type="button" id="all-rows">show all ' + view.length + "</button> (or narrow the filter).";
      document.getElementById("all-rows").addEventListener("click", function () { limit = Infinity; draw(); });
    } else {
      more.hidden = true;
    }
    document.body.setAttribute("data-shown", String(view.length));
  }

  function apply() {
    var terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var want = status.value;
    view = order.filter(function (i) {
      var st = rows[i][C_STATUS];
      if (only) return rows[i][C_ID] === only;
      if (want === "!same" ? st === "same" : want && st !== want) return false;
      if (cell && rows[i][C_CELL] !== cell) return false;
      for (var t = 0; t < terms.length; t++) if (text[i].indexOf(terms[t]) === -1) return false;
      return true;
    });
    limit = LIMIT;
    draw();
  }

  var timer = null;
  filter.addEventListener("input", function () {
    only = "";
    clearTimeout(timer);
    timer = setTimeout(apply, 60);
  });
  status.addEventListener("change", function () { only = ""; apply(); });

  // sorting: click a header (again: the other way); numbers sort as numbers
  var heads = document.querySelectorAll("#probe-table thead th");
  var sortCol = -1, sortDir = 1;
  var rank = { lost: 0, gained: 1, predicted: 2, error: 3, flaky: 4, missing: 5, accepted: 6, unrealized: 7, "new": 8, "not-run": 9, same: 10 };
  function key(i, c) {
    var v = rows[i][c];
    if (c === C_STATUS) return rank[v] === undefined ? 11 : rank[v];
    if (c === C_PORT) { var m = /^(\d+)/.exec(v); return m ? +m[1] : 1e9; }
    return v.toLowerCase();
  }
  function sortBy(c) {
    sortDir = c === sortCol ? -sortDir : 1;
    sortCol = c;
    order = order.slice().sort(function (a, b) {
      var x = key(a, c), y = key(b, c);
      return (x < y ? -1 : x > y ? 1 : a - b) * sortDir;
    });
    for (var h = 0; h < heads.length; h++) heads[h].className = h === c ? (sortDir > 0 ? "asc" : "desc") : "";
    apply();
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
    only = "";
    if (selected) selected.classList.remove("sel");
    selected = td;
    td.classList.add("sel");
    cellText.textContent = "Probes of one matrix cell: " + (td.getAttribute("title") || "").split("\n")[0];
    cellBox.hidden = false;
    status.value = "";
    apply();
    settle(document.getElementById("probes"));
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

  // the count tiles filter the table
  Array.prototype.forEach.call(document.querySelectorAll(".tile"), function (a) {
    a.addEventListener("click", function () {
      var s = a.getAttribute("data-status");
      if (!s) return;
      only = "";
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

  // a section's other changed probes wait as text (no elements to build) until asked for
  function expand(tpl) {
    var table = tpl.previousElementSibling;
    table.tBodies[0].insertAdjacentHTML("beforeend", tpl.textContent);
    var p = tpl.nextElementSibling;
    if (p && p.classList.contains("more-rows")) p.remove();
    tpl.remove();
  }
  Array.prototype.forEach.call(document.querySelectorAll("button.show-more"), function (b) {
    b.addEventListener("click", function () { expand(b.parentElement.previousElementSibling); });
  });

  // long explanations: three lines, a click shows the rest
  document.addEventListener("click", function (e) {
    var c = e.target.closest && e.target.closest(".clamp");
    if (c) c.classList.toggle("open");
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
        try { if (document.execCommand("copy")) done(); else b.textContent = "Selected: press Ctrl+C"; } catch (err) { b.textContent = "Selected: press Ctrl+C"; }
      }
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(t).then(done, fallback);
      else fallback();
    });
  });

  // sections far from the screen are laid out only when they come near it (content-visibility):
  // after a jump, scroll again once the sections around the target have their real height
  function settle(el) {
    el.scrollIntoView();
    requestAnimationFrame(function () { requestAnimationFrame(function () { el.scrollIntoView(); }); });
    setTimeout(function () { el.scrollIntoView(); }, 120);
  }

  // a link to a probe the page does not show (filtered out, or not drawn): show it in the table
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (!id) return;
    var el = document.getElementById(id);
    if (el && el.offsetParent !== null) { settle(el); return; }
    var m = /^[tpd]-([0-9a-f]+)$/.exec(id);
    if (!el) { // a changed probe not drawn yet
      var tpls = document.querySelectorAll("script.more");
      for (var i = 0; i < tpls.length && !el; i++) {
        if (tpls[i].textContent.indexOf('id="' + id + '"') !== -1) { expand(tpls[i]); el = document.getElementById(id); }
      }
    }
    if (el) { // inside a closed <details>: open it
      for (var d = el.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
      settle(el);
      return;
    }
    if (!m) return;
    only = m[1];
    filter.value = ""; status.value = ""; cell = ""; cellBox.hidden = true;
    apply();
    var row = document.getElementById("t-" + m[1]);
    if (row) settle(row);
  }
  window.addEventListener("hashchange", reveal);
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest('a[href^="#"]');
    if (a && a.getAttribute("href") === location.hash) reveal();
  });

  // print: open the fixes and unfold every explanation
  window.addEventListener("beforeprint", function () {
    Array.prototype.forEach.call(document.querySelectorAll("script.more"), expand);
    Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
  });

  apply();
  reveal();
  document.body.setAttribute("data-ready", "1");
})();
