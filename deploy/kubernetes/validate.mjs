// Validates the Kubernetes manifests given as arguments against the
// Kubernetes API schemas (kubernetes-models, generated from the
// Kubernetes OpenAPI document, and its prometheus-operator models for the
// ServiceMonitor). Run by scripts/check-deploy, which installs the
// packages. Exits 1 on the first file with an invalid object.
import { readFileSync } from "node:fs";
import yaml from "js-yaml";

const models = {
  "v1/ConfigMap": "kubernetes-models/v1/ConfigMap",
  "v1/Secret": "kubernetes-models/v1/Secret",
  "v1/Service": "kubernetes-models/v1/Service",
  "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget",
  "networking.k8s.io/v1/NetworkPolicy": "kubernetes-models/networking.k8s.io/v1/NetworkPolicy",
  "monitoring.coreos.com/v1/ServiceMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
};

let failed = 0, checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || doc.kind === "Kustomization") continue;
    const key = `${doc.apiVersion}/${doc.kind}`;
    const path = models[key];
    if (!path) {
      console.error(`${file}: ${key}: no schema known`);
      failed++;
      continue;
    }
    const mod = await import(path);
    try {
      new mod[doc.kind](doc).validate();
      checked++;
      console.log(`${file}: ${key} ${doc.metadata?.name}: valid`);
    } catch (e) {
      console.error(`${file}: ${key} ${doc.metadata?.name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} passed, ${failed} failed`);
process.exit(failed > 0 || checked === 0 ? 1 : 0);
