from lora_theory.cli import main

main()
