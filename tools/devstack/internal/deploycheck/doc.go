// Package deploycheck has no code of its own: its tests validate the
// repository's deployment files — docker-compose.yml, the Dockerfile and
// deploy/ — with the libraries the real tools are built on, since the
// machines that test blobref have no Docker engine and no Kubernetes
// cluster. They run in `make test` and `make compose-check`.
package deploycheck
