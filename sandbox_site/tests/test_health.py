from __future__ import annotations

from sandbox_site import __version__


def test_health_answers_without_authentication(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert body["uptime"] >= 0


def test_health_refuses_writes(client):
    assert client.post("/api/v1/health").status_code == 405
