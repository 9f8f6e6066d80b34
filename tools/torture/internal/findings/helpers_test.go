package findings

import (
	"crypto/sha256"
	"net/http"
)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func readyz(addr string) (bool, error) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
