from instdiv.cli import app

app(prog_name="instdiv")
