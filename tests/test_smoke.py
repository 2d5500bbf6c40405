from datapass.audit import service as audit


def test_audit_chain_on_both_backends(app):
    for i in range(3):
        audit.record("accounts:user:login", audit.Actor.system("test"), payload={"i": i})
    assert audit.verify_chain().ok


def test_home(client):
    assert client.get("/").status_code == 200
