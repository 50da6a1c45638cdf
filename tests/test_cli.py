from tg_rapidalign.cli import main


def test_demo_smoke(tmp_path, capsys):
    assert main(["demo", "--steps", "5", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MMD^2" in out and (tmp_path / "demo_mmd.png").exists()
