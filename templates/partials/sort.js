// Sortable tables: click (or Enter on) a header button to sort the table's rows by that
// column; again to reverse. Cells carry their raw value in data-sort, so "12.3" sorts as
// a number and "-" (no value) always sorts last. Rows in a tbody.reference stay on top.
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
  function sortBy(table, header) {
    var body = table.querySelector("tbody.rows");
    if (!body) { return; }
    var index = Number(header.getAttribute("data-col"));
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, position) {
      return { row: row, value: key(row, index), position: position };
    });
    rows.sort(function (x, y) {
      var xe = x.value === null || x.value === "", ye = y.value === null || y.value === "";
      if (xe || ye) { return xe === ye ? x.position - y.position : (xe ? 1 : -1); }
      var order = compare(x.value, y.value, numeric);
      if (order === 0 || isNaN(order)) { return x.position - y.position; }
      return ascending ? order : -order;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
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
