package admin

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestRecovererAnswers500AndLogs(t *testing.T) {
	logs := &syncBuffer{}
	s := &server{log: slog.New(slog.NewJSONHandler(logs, nil))}
	e := gin.New()
	e.Use(s.recoverer)
	e.GET("/boom", func(*gin.Context) { panic("boom") })
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/boom", nil)
	req.Header.Set("Authorization", "Bearer secret-token-value")
	e.ServeHTTP(rec, req)
	var eb apiErrBody
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || rec.Code != http.StatusInternalServerError || eb.Error.Code != "internal" {
		t.Errorf("panic answered %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "boom") || strings.Contains(logs.String(), "secret-token-value") {
		t.Errorf("log = %s", logs)
	}
}

// TestConcurrentRequests runs writes and reads in parallel so -race sees the
// handler's shared state (metrics, logger, store) under load.
func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ext := fmt.Sprintf("20%02d", i)
			status, body := e.do("POST", base+"/users", admin, map[string]string{"extension": ext, "name": "User " + ext})
			if status != 201 {
				errs <- fmt.Sprintf("create %s = %d %s", ext, status, body)
				return
			}
			var u userJSON
			if err := json.Unmarshal(body, &u); err != nil {
				errs <- err.Error()
				return
			}
			for _, path := range []string{base + "/users", base + "/users/" + u.ID, base + "/users/" + u.ID + "/deletion-check", "/metrics"} {
				if status, body := e.do("GET", path, admin, nil); status != 200 {
					errs <- fmt.Sprintf("GET %s = %d %s", path, status, body)
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var list userList
	e.call("GET", base+"/users", admin, nil, 200, &list)
	if len(list.Users) != 8 {
		t.Errorf("%d users, want 8", len(list.Users))
	}
}
