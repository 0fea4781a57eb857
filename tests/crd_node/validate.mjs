// Reads a JSON array of Kubernetes objects on stdin; prints one JSON line per object:
// {"kind", "name", "errors"} with errors null when the object fits its CRD's schema.
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};
let input = "";
for await (const chunk of process.stdin) input += chunk;
for (const doc of JSON.parse(input)) {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  let errors = null;
  if (!Model) errors = [`no schema for ${doc.apiVersion} ${doc.kind}`];
  else {
    try {
      new Model(doc).validate();
    } catch (e) {
      errors = e.errors ?? [String(e)];
    }
  }
  console.log(JSON.stringify({ kind: doc.kind, name: doc.metadata?.name, errors }));
}
