// Sortable tables: click (or Enter on) a header button to sort the table's rows by that
// column; again to reverse. Cells carry their raw value in data-sort, so "12.3" sorts as
// a number and "-" (no value) always sorts last. Rows in a tbody.reference stay on top;
// grouped tables (several tbody.rows) sort their groups and the rows inside each.
(function () {
  "use strict";
  function key(row, index) {
    var cell = row.cells[index];
    return cell ? cell.getAttribute("data-sort") : "";
  }
  function compare(a, b, numeric) {
    if (numeric) { return parseFloat(a) - parseFloat(b); }
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }
  // Stable sort of items {value, position}: empty values last whatever the direction.
  function ordered(items, numeric, ascending) {
    return items.sort(function (x, y) {
      var xe = x.value === null || x.value === "", ye = y.value === null || y.value === "";
      if (xe || ye) { return xe === ye ? x.position - y.position : (xe ? 1 : -1); }
      var order = compare(x.value, y.value, numeric);
      if (order === 0 || isNaN(order)) { return x.position - y.position; }
      return ascending ? order : -order;
    });
  }
  // A table may hold several tbody.rows, each a group whose first row (tr.group-head)
  // carries the group's own values: the groups sort by their heads, and the rows inside
  // each group by their own values, the head staying on top of its group.
  function sortBy(table, header) {
    var bodies = Array.prototype.slice.call(table.querySelectorAll("tbody.rows"));
    if (!bodies.length) { return; }
    var index = Number(header.getAttribute("data-col"));
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    bodies.forEach(function (body) {
      var rows = Array.prototype.filter.call(body.rows, function (row) {
        return !row.classList.contains("group-head");
      }).map(function (row, position) {
        return { item: row, value: key(row, index), position: position };
      });
      ordered(rows, numeric, ascending).forEach(function (entry) {
        body.appendChild(entry.item);
      });
    });
    if (bodies.length > 1) {
      var groups = bodies.map(function (body, position) {
        var head = body.querySelector("tr.group-head");
        return { item: body, value: head ? key(head, index) : "", position: position };
      });
      ordered(groups, numeric, ascending).forEach(function (entry) {
        table.appendChild(entry.item);
      });
    }
    table.querySelectorAll("th[aria-sort]").forEach(function (th) {
      th.setAttribute("aria-sort", "none");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th.sortable").forEach(function (header) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () { sortBy(table, header); });
      }
    });
  });
}());
