//! `deploy/kubernetes/`: the kustomize overlays render and every object is
//! valid for a real API server (`kubectl apply --dry-run=server`).
