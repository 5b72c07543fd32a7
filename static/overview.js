// The Overview's throughput chart: uPlot fed from the JSON island in overview/_traffic.html,
// redrawn whenever htmx swaps that partial in.
function drawThroughput() {
  const box = document.getElementById("throughput-chart"), island = document.getElementById("throughput-data");
  if (!box || !island || !window.uPlot) return;
  const d = JSON.parse(island.textContent), ceiling = d.x.map(() => d.ceiling);
  box.replaceChildren();
  new uPlot({
    width: box.clientWidth || 800, height: 220,
    scales: { y: { distr: 3 } },  // log scale: a trickle and the 150,000/min ceiling both show
    series: [{}, { label: "Events/min", stroke: "#2563eb", fill: "rgba(37,99,235,0.12)", spanGaps: false },
             { label: "Klaviyo ceiling", stroke: "#cf222e", dash: [6, 4], points: { show: false } }],
    axes: [{}, { size: 70 }],
  }, [d.x, d.events, ceiling], box);
}
document.addEventListener("DOMContentLoaded", drawThroughput);
// A fresh swap of the traffic partial leaves the chart box empty: draw into it.
document.addEventListener("htmx:afterSettle", () => {
  const box = document.getElementById("throughput-chart");
  if (box && !box.firstChild) drawThroughput();
});
