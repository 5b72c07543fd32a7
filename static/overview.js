// The Overview's throughput chart: uPlot fed from the JSON island in overview/_traffic.html,
// drawn on load and again whenever htmx swaps that partial in (the new chart box is empty).
const COLOURS = ["#2563eb", "#16a34a", "#9333ea", "#ea580c"];
const compact = (u, vals) => vals.map((v) => (v >= 1e6 ? v / 1e6 + "M" : v >= 1e3 ? v / 1e3 + "k" : v));
function drawThroughput() {
  const box = document.getElementById("throughput-chart"), island = document.getElementById("throughput-data");
  if (!box || !island || !window.uPlot) return;
  const d = JSON.parse(island.textContent);
  const lines = d.series.map((s, i) => ({ label: s.label, stroke: COLOURS[i % 4], points: { show: true, size: 5, fill: COLOURS[i % 4] } }));
  box.replaceChildren();
  // A first day (activity in only the last few hours): zoom to an hour before the first sent minute
  // instead of drawing 23 empty hours and a speck at the right edge.
  const first = d.x.findIndex((_, i) => d.series.some((s) => s.data[i]));
  const last = d.x[d.x.length - 1];
  const from = first < 0 ? last - 3600 : Math.max(d.x[0], d.x[first] - 3600);
  new uPlot({
    width: box.clientWidth || 800, height: 220,
    // Log scale from 1 to 1M a minute: a trickle and the 150,000/min ceiling both show.
    scales: { x: { time: true, range: [from, last + 60] }, y: { distr: 3, range: [1, 1e6] } },
    series: [{}, ...lines, { label: "Klaviyo ceiling (bulk events)", stroke: "#cf222e", dash: [6, 4], points: { show: false } }],
    axes: [{}, { size: 60, values: compact }],
  }, [d.x, ...d.series.map((s) => s.data), d.x.map(() => d.ceiling)], box);
}
document.addEventListener("DOMContentLoaded", drawThroughput);
document.addEventListener("htmx:afterSettle", () => {
  const box = document.getElementById("throughput-chart");
  if (box && !box.firstChild) drawThroughput();
});
