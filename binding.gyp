{
  "targets": [
    {
      "target_name": "sendrange",
      "sources": ["native/sendrange.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
