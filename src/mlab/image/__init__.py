"""The HomePod image: one provisioning recipe for the production Containerfile and the
local registry-free build (``mlab image build --local``). See docs/image.md."""
