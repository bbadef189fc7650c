(function () {
  "use strict";
  var tbody = document.getElementById("rows");
  if (!tbody) { return; }
  var rows = Array.prototype.slice.call(tbody.rows);
  var statusOrder = { ok: 0, no_face: 1, error: 2, skipped: 3 };
  var current = null;
  var shown = document.getElementById("shown-count");

  function prob(row) {
    var p = row.getAttribute("data-p");
    return p === "" ? null : parseFloat(p);
  }
  var keys = {
    p: function (a, b) {
      var x = prob(a), y = prob(b);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return x - y;
    },
    status: function (a, b) {
      return statusOrder[a.getAttribute("data-status")] - statusOrder[b.getAttribute("data-status")];
    },
    name: function (a, b) {
      return a.getAttribute("data-name").localeCompare(b.getAttribute("data-name"));
    }
  };

  function sortBy(key, descending) {
    var cmp = keys[key];
    var indexed = rows.map(function (row, i) { return [row, i]; });
    indexed.sort(function (a, b) {
      var c = cmp(a[0], b[0]);
      if (key === "p" && (prob(a[0]) === null || prob(b[0]) === null)) { return c || a[1] - b[1]; }
      return (descending ? -c : c) || a[1] - b[1];
    });
    rows = indexed.map(function (pair) { return pair[0]; });
    rows.forEach(function (row) { tbody.appendChild(row); });
    document.querySelectorAll("th[data-key]").forEach(function (th) {
      th.setAttribute("aria-sort", th.getAttribute("data-key") === key ?
        (descending ? "descending" : "ascending") : "none");
    });
  }

  document.querySelectorAll("th[data-key] button").forEach(function (button) {
    button.addEventListener("click", function () {
      var th = button.parentNode;
      var key = th.getAttribute("data-key");
      var now = th.getAttribute("aria-sort");
      var descending = now === "none" ? key === "p" : now === "ascending";
      sortBy(key, descending);
    });
  });

  function applyFilter() {
    var allowed = {};
    document.querySelectorAll("input[data-filter]").forEach(function (box) {
      allowed[box.getAttribute("data-filter")] = box.checked;
    });
    var count = 0;
    rows.forEach(function (row) {
      row.hidden = !allowed[row.getAttribute("data-status")];
      if (!row.hidden) { count += 1; }
    });
    if (shown) { shown.textContent = String(count); }
    if (current && current.hidden) { select(null); }
  }
  document.querySelectorAll("input[data-filter]").forEach(function (box) {
    box.addEventListener("change", applyFilter);
  });

  function select(row) {
    if (current) { current.classList.remove("sel"); current.removeAttribute("aria-selected"); }
    current = row;
    if (row) {
      row.classList.add("sel");
      row.setAttribute("aria-selected", "true");
      row.scrollIntoView({ block: "nearest" });
    }
  }
  function step(delta) {
    var visible = rows.filter(function (row) { return !row.hidden; });
    if (!visible.length) { return; }
    var at = current ? visible.indexOf(current) : -1;
    var next = at < 0 ? (delta > 0 ? 0 : visible.length - 1) : Math.min(visible.length - 1, Math.max(0, at + delta));
    select(visible[next]);
  }
  tbody.addEventListener("click", function (event) {
    var row = event.target.closest("tr");
    if (row && !event.target.closest("a")) { select(row); }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var tag = event.target && event.target.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && event.target.type === "text")) { return; }
    var key = event.key;
    if (key === "j" || key === "ArrowDown") { step(1); event.preventDefault(); }
    else if (key === "k" || key === "ArrowUp") { step(-1); event.preventDefault(); }
    else if ((key === "o" || key === "Enter") && current && tag !== "BUTTON" && tag !== "A") {
      var link = current.querySelector("a.orig");
      if (link) { link.click(); event.preventDefault(); }
    }
  });
  document.body.setAttribute("data-ready", "1");
}());
