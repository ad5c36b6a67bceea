fn main() {
    println!("notes");
}
