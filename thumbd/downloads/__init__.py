"""URL manifests and the download stage that turns their URLs into files in incoming/."""
