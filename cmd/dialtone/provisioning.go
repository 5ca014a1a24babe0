package main

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/store"
)

// newProvisioning builds the provisioning handler. Until the provisioning
// package lands it answers 404 to everything, as it would for unknown phones.
func newProvisioning(db *store.DB, cfg config, boundAddr string, log *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	return http.NotFoundHandler(), nil
}
