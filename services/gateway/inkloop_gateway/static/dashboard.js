// The analytics dashboard: small JSON endpoints on the gateway (/v1/analytics/*, analyst role, the
// key's tenant) drawn with ECharts (vendored from npm at build time into /static/vendor/).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "inkloop.analystKey";
  let apiKey = localStorage.getItem(KEY) || "";
  const charts = {};
  const chart = (id) => (charts[id] ||= echarts.init($(id)));
  const pct = (x) => `${((x || 0) * 100).toFixed(1)}%`;

  async function get(name) {
    const response = await fetch(`/v1/analytics/${name}?hours=${$("hours").value}`, {
      headers: { Authorization: `Bearer ${apiKey}` },
    });
    const body = await response.json();
    if (!response.ok) throw Object.assign(new Error(body.message), body);
    return body;
  }

  function bars(id, categories, series, extra = {}) {
    chart(id).setOption(
      {
        tooltip: { trigger: "axis" },
        legend: { bottom: 0 },
        grid: { left: 48, right: 56, bottom: 64, top: 40 },
        xAxis: { type: "category", data: categories },
        yAxis: [{ type: "value" }, { type: "value", max: 1, axisLabel: { formatter: (v) => pct(v) } }],
        series,
        ...extra,
      },
      true,
    );
  }

  const draw = {
    funnel(data) {
      const steps = data.series?.[0]?.steps || [];
      chart("funnel").setOption(
        {
          tooltip: { formatter: (p) => `${p.name}: ${p.value} (${pct(steps[p.dataIndex]?.conversionFromFirst)})` },
          series: [{ type: "funnel", sort: "none", left: "10%", width: "80%", label: { position: "inside", formatter: "{b}: {c}" },
            data: steps.map((s) => ({ name: s.name, value: Number(s.count || 0) })) }],
        },
        true,
      );
    },
    discrepancy(data) {
      const buckets = data.buckets || [];
      const at = buckets.map((b) => new Date(b.start).toLocaleTimeString());
      const n = (key) => buckets.map((b) => Number(b[key] || 0));
      bars("discrepancy", at, [
        { name: "matched", type: "bar", stack: "r", data: n("matched") },
        { name: "front only (lost)", type: "bar", stack: "r", data: n("frontendOnly") },
        { name: "back only (tracker blocked)", type: "bar", stack: "r", data: n("backendOnly") },
        { name: "loss rate", type: "line", yAxisIndex: 1, data: buckets.map((b) => b.lossRate || 0) },
      ], { title: { text: `total loss ${pct(data.total?.lossRate)}`, right: 0, textStyle: { fontSize: 12 } } });
    },
    prompts(data) {
      const groups = [...(data.byLength || []), ...(data.byLanguage || [])];
      bars("prompts", groups.map((g) => g.label), [
        { name: "requests", type: "bar", data: groups.map((g) => Number(g.requests || 0)) },
        { name: "success rate", type: "line", yAxisIndex: 1, data: groups.map((g) => g.successRate || 0) },
      ]);
    },
    adoption(data) {
      const features = data.features || [];
      bars("adoption", features.map((f) => f.feature), [
        { name: "exposures", type: "bar", data: features.map((f) => Number(f.exposures || 0)) },
        { name: "clicks", type: "bar", data: features.map((f) => Number(f.clicks || 0)) },
        { name: "click rate", type: "line", yAxisIndex: 1, data: features.map((f) => f.clickRate || 0) },
      ], { title: { text: `page views ${data.pageViews || 0} · visitors ${data.uniqueVisitors || 0}`, right: 0,
        textStyle: { fontSize: 12 } } });
    },
    variants(data) {
      const variants = data.variants || [];
      bars("variants", variants.map((v) => v.variant), [
        { name: "requests", type: "bar", data: variants.map((v) => Number(v.requests || 0)) },
        { name: "success rate", type: "line", yAxisIndex: 1, data: variants.map((v) => v.successRate || 0) },
        { name: "p95 s", type: "bar", data: variants.map((v) => v.latencyP95S || 0) },
      ]);
    },
    outcomes(data) {
      // Each request's one outcome, stacked; the line is what users kept (accepted / requests).
      const groups = data.groups || [];
      const n = (key) => groups.map((g) => Number(g[key] || 0));
      bars("outcomes", groups.map((g) => g.value || "–"), [
        { name: "accepted", type: "bar", stack: "o", data: n("accepted") },
        { name: "regenerated", type: "bar", stack: "o", data: n("regenerated") },
        { name: "abandoned", type: "bar", stack: "o", data: n("abandoned") },
        { name: "failed", type: "bar", stack: "o", data: n("failed") },
        { name: "perceived success", type: "line", yAxisIndex: 1, data: groups.map((g) => g.perceivedSuccess || 0) },
      ]);
    },
    templates(data) {
      // The suggestion loop per template, and its Bayesian estimate of perceived success.
      const templates = data.templates || [];
      const n = (key) => templates.map((t) => Number(t[key] || 0));
      bars("templates", templates.map((t) => t.name || t.templateId), [
        { name: "shown", type: "bar", data: n("shown") },
        { name: "picked", type: "bar", data: n("picked") },
        { name: "requests", type: "bar", data: n("requests") },
        { name: "accepted", type: "bar", data: n("accepted") },
        { name: "estimate", type: "line", yAxisIndex: 1, data: templates.map((t) => t.estimate || 0) },
      ]);
    },
    experiment(data) {
      // Conversion rate per arm for each goal; the verdicts and the sample-ratio check in the title.
      const goals = data.goals || [];
      const arms = goals[0]?.arms?.map((a) => a.arm) || [];
      const verdicts = goals.map((g) => `${g.goal}: ${g.verdict}`).join(" · ");
      const srm = data.sampleRatio?.mismatch ? " · SAMPLE RATIO MISMATCH" : "";
      bars("experiment", arms, [
        { name: "exposed visitors", type: "bar", data: (goals[0]?.arms || []).map((a) => Number(a.exposures || 0)) },
        ...goals.map((g) => ({ name: g.goal, type: "line", yAxisIndex: 1, data: g.arms.map((a) => a.rate || 0) })),
      ], { title: { text: `${data.experiment}: ${verdicts}${srm}`, right: 0, textStyle: { fontSize: 12 } } });
    },
    alerts(data) {
      const list = $("alerts");
      const alerts = data.alerts || [];
      list.replaceChildren(...alerts.map((a) => Object.assign(document.createElement("li"), {
        textContent: `${new Date(a.firedAt).toLocaleString()} · ${a.rule?.name}: ${a.message}`,
      })));
      if (!alerts.length) list.replaceChildren(Object.assign(document.createElement("li"), { textContent: "无 none" }));
    },
  };

  async function refresh() {
    if (!apiKey) {
      $("key-panel").hidden = false;
      return;
    }
    $("error").hidden = true;
    for (const [name, render] of Object.entries(draw)) {
      try {
        render(await get(name));
      } catch (error) {
        $("error").hidden = false;
        $("error").textContent = `${name}: ${error.code || ""} ${error.message}`;
        if (error.code === "UNAUTHENTICATED" || error.code === "PERMISSION_DENIED") $("key-panel").hidden = false;
      }
    }
  }

  $("save-key").addEventListener("click", () => {
    apiKey = $("api-key").value.trim();
    localStorage.setItem(KEY, apiKey);
    $("key-panel").hidden = true;
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY);
    apiKey = "";
    $("key-panel").hidden = false;
  });
  $("hours").addEventListener("change", refresh);
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  refresh();
})();
